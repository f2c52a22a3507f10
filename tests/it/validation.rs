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

/// A torchtitan run that publishes no layout: the validator skips it (only the Megatron-Core
/// README's rows have their tensor and pipeline sizes searched).
const NO_LAYOUT_RUN: &str = "- id: no-layout
  group: torchtitan-user
  model: {name: tiny, layers: 4, hidden: 512, heads: 8, vocab: 32000, seq_len: 1024}
  hardware: {gpu: A100-SXM4-80GB, count: 8, gpus_per_node: 8}
  parallel: {recompute: full}
  batch: {micro_batch: 1, global_batch: 8}
  precision: bf16
  measured: {iteration_time_s: 1.0}
";

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

/// One group's bounds: mean and max |error| at most, Spearman ρ at least, memory verdicts all
/// right (each `None` is not asserted).
struct Bounds {
    mean: Option<f64>,
    max: Option<f64>,
    rho: Option<f64>,
    verdicts: bool,
}

fn check(r: &Report, name: &str, b: Bounds) {
    let g = group(r, name);
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    if let Some(m) = b.mean {
        let e = g.mean_abs_error.expect("rows compared");
        assert!(e <= m, "{name}: mean |err| {} > {}", pct(e), pct(m));
    }
    if let Some(m) = b.max {
        let e = g.max_abs_error.expect("rows compared");
        assert!(e <= m, "{name}: max |err| {} > {}", pct(e), pct(m));
    }
    if let Some(rho) = b.rho {
        let got = g.spearman.unwrap_or(f64::NAN);
        assert!(got >= rho, "{name}: ρ {got:.2} < {rho}");
    }
    if b.verdicts {
        assert_eq!(g.verdicts_correct, g.verdicts, "{name}: memory verdicts");
    }
}

/// Issue 3's bounds where the model meets them: Megatron on A100 (SC'21 and the Korthikanti
/// et al. runs added beyond the shared set) within 5% mean and 10% max; torchtitan and MPT
/// (llm-foundry's A100 table, and its H100 table held out) within 10% mean; throughput ranks
/// where the group varies the configuration.
#[test]
fn groups_meeting_the_accuracy_bounds() {
    let r = report();
    let megatron = |rho| Bounds {
        mean: Some(0.05),
        max: Some(0.10),
        rho,
        verdicts: true,
    };
    check(&r, "megatron-sc21-table1", megatron(None));
    check(&r, "korthikanti-2022-table5", megatron(Some(0.9)));
    let torchtitan = Bounds {
        mean: Some(0.10),
        max: None,
        rho: Some(0.9),
        verdicts: false,
    };
    check(&r, "torchtitan-a100-64gpu", torchtitan);
    // 6.6% and 6.6% since Composer's two training-metric cross-entropies per micro-batch are
    // priced (12.1% before, the small models +15…28%). The H100 table's 1B rows at
    // micro-batch 20 ran, and are predicted to fit since flash-attn's fused loss keeps no fp32
    // copy of the logits (they were at 80.7–81.7 GiB).
    let mpt = || Bounds {
        mean: Some(0.10),
        max: None,
        rho: Some(0.95),
        verdicts: true,
    };
    check(&r, "mosaicml-mpt-a100-80gb", mpt());
    check(&r, "mosaicml-mpt-h100-80gb", mpt());
}

/// torchtitan's op-level selective checkpointing, priced as torchtitan runs it: Llama 2 70B
/// at local batch 1 ran and is predicted to fit (65.7 GiB), at local batch 2 it ran out of
/// memory (the doc's footnote) and is predicted not to (108.3 GiB). Priced as every second
/// block checkpointed in full, the first was predicted at 92.1 GiB, out of memory. The
/// group's one wrong verdict left is Llama 2 13B at local batch 2 without checkpointing, which
/// ran: eager RMSNorm alone keeps 74.4 GiB of activations there (see the closing notes).
#[test]
fn torchtitan_op_level_checkpointing_verdicts() {
    let r = report();
    let row = |id: &str| r.rows.iter().find(|x| x.id == id).unwrap();
    let ran = row("torchtitan-a100-llama2-70b-lbs1-selectiveop");
    assert!(
        ran.predicted_fits && !ran.measured_oom,
        "{:.1} GiB",
        ran.predicted_memory_gib
    );
    let oom = row("torchtitan-a100-llama2-70b-lbs2-selectiveop");
    assert!(
        !oom.predicted_fits && oom.measured_oom,
        "{:.1} GiB",
        oom.predicted_memory_gib
    );
    let g = group(&r, "torchtitan-a100-64gpu");
    assert_eq!((g.verdicts_correct, g.verdicts), (8, 9));
}

/// Regression guards at today's accuracy for the groups that do not yet meet issue 3's bounds
/// (see the notes): they fail if the model gets worse, not when it gets better.
#[test]
fn groups_not_yet_at_the_bounds_do_not_regress() {
    let r = report();
    let guard = |mean, max, rho, verdicts| Bounds {
        mean,
        max,
        rho,
        verdicts,
    };
    // Held out (no constant set from it): llm-foundry's H100 BF16 table, max 25.9% (the 13B
    // rows at micro-batch 2 without checkpointing, +22…24% at every GPU count). Its mean was
    // 26.3%, with errors growing with sequence length to +55%, when Triton FlashAttention was
    // priced from the cuDNN kernel's H100 efficiency rather than FlashAttention-2's.
    check(
        &r,
        "mosaicml-mpt-h100-80gb",
        guard(None, Some(0.30), None, true),
    );
    // 8.7% (all rows too fast) and ρ 0.69 since DeepSpeed's pipeline transfers are priced as
    // its engine runs them (TP-partitioned tensors gathered by the receiver, receive and send
    // as separate blocking calls). The model had sent the whole tensor from every TP rank,
    // which made the tp = 8 rows slow enough to hide what they are still missing (they remain
    // the +8…+27% rows); it was 5.2% and ρ 0.75 with that error in. 9.5%, ρ 0.71 since the
    // two end stages are charged the one transfer per pass they make (DeepSpeed's first stage
    // only sends activations and receives gradients, its last the reverse), not a middle
    // stage's two: the last stage, heavy with the 250,880-word head, sets the pace (it had
    // been 8.7%, the closed form 2.6% slower than the simulator on such plans). 9.3%, ρ 0.68
    // since a partial GEMM tile costs a whole one: the rows whose heads are not 128 wide
    // (192, 208, 224) move 0.2–0.5 points slower, reordering near-ties.
    check(
        &r,
        "bloom-176b-topology-sweep",
        guard(Some(0.10), None, Some(0.65), false),
    );
    check(&r, "bloom-176b", guard(None, Some(0.06), None, false));
    // 11.7%, ρ 0.80, since Megatron-LM's aligned gradient sync is priced as it runs (under
    // pipelining a chunk's reduction is issued after the chunk's last backward, interleaved
    // chunks' in the drain): the closed form had charged a stage's whole reduction against
    // one micro-batch's backward, up to 18% slower than the simulator on interleaved plans,
    // which hid part of what the rows are still missing (9.7%, ρ 0.50, then). 9.7% came from
    // 16.6% once overlapped collectives slowed the compute beside them and attention ran at
    // the sustained clock. 12.4% over 11 rows since the two strong-scaling rows, which publish
    // no layout, are priced at the layout the validator searches (+18.4%, +13.6%); the nine
    // weak-scaling rows are unchanged.
    check(
        &r,
        "megatron-core-h100-readme",
        guard(Some(0.13), None, Some(0.75), true),
    );
    let mc = group(&r, "megatron-core-h100-readme");
    assert_eq!(mc.skipped, 0, "the strong-scaling rows search their layout");
    // NeMo's FP8 H100 tables, held out (no constant set from them). The same GPT-3 175B
    // layout (TP4 PP8 VP6, MBS 2, 512 GPUs) measured 842 TFLOP/s on NeMo 24.07 and 932 on
    // 25.02: 10.7% apart, so no prediction is within 5% of both; the model sits at the slower
    // release (+1.0% and −10.3%, the 25.02 run priced with current scaling's amax passes as it
    // ran, −8.9% with delayed scaling's casts; +2.8% and −7.3% before overlapped collectives
    // slowed the compute beside them and attention ran at burst clocks). NeMo 24.07's nine runs: 6.3%
    // mean, ρ 0.98 (5.7%, ρ 0.93, before Megatron's aligned gradient sync was priced).
    // Since FP8 plans keep Transformer Engine's FP8 weight copy unless they gather FP8
    // weights (`--fp8-param-gather`, which no table states and the validator searches), every
    // FP8 row prices with FP8 weights (without them GPT-3 20B on 64 GPUs needs 95 GiB, yet it
    // ran), whose halved parameter gather makes the group 7.0% (6.4% before).
    check(
        &r,
        "nemo-h100-performance-summary",
        guard(None, Some(0.11), None, true),
    );
    assert_eq!(group(&r, "nemo-24.07-h100-performance-summary").compared, 9);
    check(
        &r,
        "nemo-24.07-h100-performance-summary",
        guard(Some(0.075), None, Some(0.9), true),
    );
    // Grok-1 (8 experts, top 2) in NVIDIA's DGX Cloud recipe, held out (no constant set from
    // it): 12.8% mean, ρ 0.86, every row fits as it ran. The BF16 rows are within 9% in both
    // releases: NeMo 25.04's whole experts (etp 1, −7.7%; −18% when it was priced with the
    // experts split over TP, their all-to-all across four nodes) and the 2024 container's
    // experts split over TP (+7.1…+8.4%). The FP8 rows are 12.5–20.8% fast: the model's FP8
    // expert GEMMs gain 1.45× where the runs gained 1.19–1.25×.
    check(
        &r,
        "nemo-dgxc-h100-grok1",
        guard(Some(0.13), Some(0.21), Some(0.8), true),
    );
    // Megatron-Bridge's DGX-H100 FP8 (current scaling) tables of 2025-26, held out (no constant
    // set from them): 8.1% mean, max 10.0%, ρ 1.00, every row fits as it ran, priced with
    // current scaling's amax passes and Transformer Engine's fused loss, as the recipes run
    // (9.1% and 12.6% with delayed scaling's casts and the unfused loss). The Llama 3 8B
    // (FSDP) and 70B (TP4 PP8 VP5) rows are 7–10% slow and the 405B rows (TP8 PP8 CP2 VP8)
    // 5–10% fast: against NeMo 24.07, whose 70B row the model prices 6.4% fast, the newer
    // stack runs the 70B 4.5% faster on a layout the model prices 9% slower (its last of
    // eight stages carries the LM head beside ten layers), so software moves these figures
    // by more than the residual.
    assert_eq!(group(&r, "nemo-megatron-bridge-h100").compared, 5);
    check(
        &r,
        "nemo-megatron-bridge-h100",
        guard(Some(0.10), Some(0.125), Some(0.9), true),
    );
    // The same tables' DGX-B200 FP8 (current scaling) rows, the only dense-model B200 runs
    // with their layouts found, held out: the B200 preset's constants come from
    // microbenchmarks (hardware/gpus/b200-sxm-180gb.yaml). Llama 3 8B +8.1%, Llama 3.1 405B
    // +12.7% (with no transposed FP8 copies on Blackwell and the fused loss; +4.5% and +11.6%
    // with Hopper's copies and the unfused loss), against −9.9% and +10.0% for the same models
    // on the same stack's H100s.
    assert_eq!(group(&r, "nemo-megatron-bridge-b200").compared, 2);
    check(
        &r,
        "nemo-megatron-bridge-b200",
        guard(Some(0.11), Some(0.13), None, true),
    );
    // The same tables' MoE rows the model can price (FP8-CS on H100, BF16 GPT-OSS on both),
    // held out: 23.7% mean. Qwen3-235B-A22B (TP2 PP8 VP4 EP32) reads +19.9% on 25.09 (token
    // drop) and −8.3%, −10.6% on 25.11 and 26.02 (dropless): the software moved the layout by
    // 36% between releases. Qwen3-30B-A3B reads +15.3% on 25.09; its 25.11 row, the
    // maintainers' own 2× regression (Megatron-Bridge #1998), is a group of its own below.
    // gpt-oss-120b reads +28…+45% (+34…+59% before its clamp and its experts' fc2 bias were
    // priced as Megatron-Core runs them, outside the fused kernels, and the experts' GEMMs in
    // rounds of Transformer Engine's four streams; 2–12 points less again since the
    // dispatcher's regrouping of tokens by local expert is priced): the rest is open.
    // This guard holds the gap where it is so that a change that widens it fails.
    assert_eq!(group(&r, "nemo-megatron-bridge-moe").compared, 7);
    check(
        &r,
        "nemo-megatron-bridge-moe",
        guard(Some(0.25), Some(0.47), None, true),
    );
    // 25.11's Qwen3-30B-A3B row, 2× slower than 25.09's on the same layout ("the perf in 25.11
    // is 2X slower than 25.09", Megatron-Bridge #1998, dropless against token drop): the model
    // prices the hardware, not a regression of the software, so it reads +129.3% here. Held where it is: the row stays visible, and if a change moves it
    // the comment above has to be read again.
    let reg = group(&r, "nemo-megatron-bridge-moe-regression");
    assert_eq!(reg.compared, 1);
    let e = r
        .rows
        .iter()
        .find(|x| x.id == "nemo-bridge-25.11-h100-qwen3-30b-a3b-16gpu")
        .and_then(|x| x.error)
        .expect("compared");
    assert!((1.2..1.4).contains(&e), "{e}");
    for x in r
        .rows
        .iter()
        .filter(|x| x.id.starts_with("nemo-dgxc-h100-grok1") && x.id.ends_with("bf16"))
    {
        let e = x.error.expect("compared");
        assert!(e.abs() < 0.09, "{}: {e}", x.id);
    }
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
fn moe_rows_name_their_bad_expert_fields() {
    // (id, experts, top_k, etp): zero experts had panicked dividing the routed tokens.
    let rows = [
        ("experts-zero", "0", "0", "null"),
        ("etp-zero", "8", "2", "0"),
        ("top-k-missing", "8", "null", "null"),
        ("sound", "8", "2", "1"),
    ];
    let mut yaml = String::new();
    for (id, experts, top_k, etp) in rows {
        yaml += &format!(
            "- id: {id}
  group: nemo-user
  model: {{name: tiny-moe, layers: 4, hidden: 512, heads: 8, kv_heads: 8, ffn_hidden: 1024, vocab: 32000, seq_len: 1024, experts: {experts}, top_k: {top_k}}}
  hardware: {{gpu: H100-SXM-80GB, count: 8, gpus_per_node: 8}}
  parallel: {{tp: 2, pp: 1, cp: 1, ep: 8, etp: {etp}, sequence_parallel: true, recompute: none, virtual_stages: 1}}
  batch: {{micro_batch: 1, global_batch: 64}}
  precision: bf16
  measured: {{iteration_time_s: 1.0}}
"
        );
    }
    let report = validate_runs_json("moe", &yaml);
    let skipped = |id: &str| skipped_reason(&report, id);
    for (id, needle) in [
        ("experts-zero", "model.experts is 0"),
        ("etp-zero", "parallel.etp is 0"),
        ("top-k-missing", "model.experts and model.top_k"),
    ] {
        let why = skipped(id).unwrap_or_else(|| panic!("{id} was predicted"));
        assert!(why.contains(needle), "{id}: `{needle}` not in `{why}`");
    }
    // Whole experts, their EP group of 8 taken from all 8 ranks (dp 4 · tp 2).
    assert_eq!(skipped("sound"), None, "{}", report["rows"]);
}

/// `planner validate --runs` on `yaml` (written to a temporary file named by `tag`), which
/// must exit 0 without a panic: its JSON report.
fn validate_runs_json(tag: &str, yaml: &str) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!("planner-{tag}-runs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("runs.yaml");
    std::fs::write(&path, yaml).unwrap();
    let o = crate::cli::planner(&[
        "validate",
        "--runs",
        path.to_str().unwrap(),
        "--format",
        "json",
    ]);
    std::fs::remove_dir_all(&dir).ok();
    let err = crate::cli::stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    serde_json::from_str(&crate::cli::stdout(&o)).unwrap()
}

/// Why row `id` of a validate JSON report was skipped (`None`: it was predicted).
fn skipped_reason(report: &serde_json::Value, id: &str) -> Option<String> {
    let row = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("row {id}"));
    row["skipped"].as_str().map(str::to_string)
}

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
    // The group names the stack (an unknown one is itself a skipped row, see
    // `runs_file_misreadings_are_skipped_with_the_field`): torchtitan's FSDP here.
    let mut yaml = String::new();
    for (id, layers, heads, count, gpn, tp, pp, dp, mbs, gb) in rows {
        yaml += &format!(
            "- id: {id}
  group: torchtitan-user
  model: {{name: tiny, layers: {layers}, hidden: 512, heads: {heads}, vocab: 32000, seq_len: 1024}}
  hardware: {{gpu: A100-SXM4-80GB, count: {count}, gpus_per_node: {gpn}}}
  parallel: {{tp: {tp}, pp: {pp}, dp: {dp}, recompute: full}}
  batch: {{micro_batch: {mbs}, global_batch: {gb}}}
  precision: bf16
  measured: {{iteration_time_s: 1.0}}
"
        );
    }
    let report = validate_runs_json("sizes", &yaml);
    let skipped = |id: &str| skipped_reason(&report, id);
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

/// Knobs a source implies are not searched: the Megatron-Core README runs name
/// `--tp-comm-overlap`, which Megatron-LM refuses without sequence parallelism, so their
/// tp > 1 rows run with SP and only mbs, recomputation (and vpp with pp > 1) are searched.
#[test]
fn implied_knobs_are_set_not_searched() {
    let r = report();
    let row = r
        .rows
        .iter()
        .find(|x| x.id == "mlm-h100-weak-7.1b")
        .expect("row");
    assert_eq!(row.searched, vec!["mbs", "recompute"]);
    assert!(row.plan.ends_with(" sp"), "{}", row.plan);
}

/// The Megatron-Core README's size labels are untied parameter counts, and the validator
/// prices them so: GPT 1.7B (24 layers, h 2048, V 131072) holds 24·(12·2048² + 13·2048) +
/// 2·131072·2048 + 4096·2048 (learned positions) + 2·2048 (final norm) = 1,208,598,528 +
/// 536,870,912 + 8,388,608 + 4,096 = 1,753,862,144; tied it would be 268,435,456 fewer,
/// 1.485 B, which the label "1.7B" does not round to. In every row of the group the untied
/// count is the nearer to the label, and within 3.5% of it (labels are rounded: 1.75 → 1.7).
#[test]
fn megatron_core_readme_sizes_are_untied_counts() {
    use planner::validate::adapt::case;
    let runs = parse_runs("published-runs.yaml", PUBLISHED_RUNS).unwrap();
    let mut seen = 0;
    for run in runs
        .iter()
        .filter(|r| r.group == "megatron-core-h100-readme")
    {
        let c = case(run).unwrap();
        assert!(!c.model.tied_embeddings, "{}", run.id);
        let label: f64 = run
            .model
            .name
            .split_whitespace()
            .find_map(|w| w.strip_suffix('B').and_then(|x| x.parse().ok()))
            .expect("a size label");
        let params = c.model.params() / 1e9;
        let tied = params - (run.model.vocab * run.model.hidden) as f64 / 1e9;
        assert!(
            (params / label - 1.0).abs() < 0.035,
            "{}: {params} vs {label}",
            run.id
        );
        assert!((params - label).abs() < (tied - label).abs(), "{}", run.id);
        if run.id == "mlm-h100-weak-1.7b" {
            assert_eq!(c.model.params(), 1_753_862_144.0);
        }
        seen += 1;
    }
    assert_eq!(seen, 11);
}

/// Where no choice of a row's unpublished knobs fits, the row is priced at the choice
/// nearest to fitting: GPT-3 177B's strong-scaling row moved to 3 GPUs fits no layout, and
/// stands at the least memory any layout needs (pipeline over all 3, full recomputation),
/// not at the fastest layout (which needed 4,312 GiB a GPU).
#[test]
fn a_row_no_layout_fits_is_priced_nearest_to_fitting() {
    let mut runs = parse_runs("published-runs.yaml", PUBLISHED_RUNS).unwrap();
    let run = runs
        .iter_mut()
        .find(|r| r.id == "mlm-h100-strong-177b-4608gpu")
        .unwrap();
    run.hardware.count = 3;
    let row = planner::validate::validate_run(run);
    assert!(row.skipped.is_none(), "{:?}", row.skipped);
    assert!(!row.predicted_fits);
    assert!(
        row.plan.starts_with("dp=1 tp=1 pp=3 ") && row.plan.contains("rc=full"),
        "{}",
        row.plan
    );
    assert!(
        row.predicted_memory_gib < 1100.0,
        "{}",
        row.predicted_memory_gib
    );
}

/// A row's unpublished layout knobs span a range of predictions: the Megatron-Core README's
/// GPT 32B (dp = 48, tp = 8, 192 sequences: 4 per replica) is priced at its fastest choice,
/// one micro-batch of 4, and its slowest that fits is 4 micro-batches of 1, where the DP
/// reduce-scatter only overlaps the last micro-batch's backward. Both ends are the estimate of
/// that plan priced directly, and the measured 459.6 TFLOP/s lies between them.
#[test]
fn unpublished_knobs_span_a_range_of_predictions() {
    use planner::cost::estimate;
    use planner::validate::adapt::case;
    let runs = parse_runs("published-runs.yaml", PUBLISHED_RUNS).unwrap();
    let run = runs.iter().find(|r| r.id == "mlm-h100-weak-32b").unwrap();
    let row = planner::validate::validate_run(run);
    let (lo, hi) = row.predicted_range.expect("range");
    let c = case(run).unwrap();
    let priced = |mbs: u64| {
        let mut p = c.plan.clone();
        p.mbs = mbs;
        p.recompute = planner::spec::Recompute::None;
        p.sequence_parallel = true;
        estimate(&c.model, &c.cluster, &p, None).tflops_per_gpu
    };
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b;
    assert!(
        close(hi, row.predicted.unwrap()),
        "{hi} vs {:?}",
        row.predicted
    );
    assert!(close(hi, priced(4)), "{hi} vs {}", priced(4));
    assert!(close(lo, priced(1)), "{lo} vs {}", priced(1));
    assert!(hi / lo > 1.2, "{lo}..{hi}");
    assert!(lo < 459.6 && 459.6 < hi);
    let all = report();
    let g = group(&all, "megatron-core-h100-readme");
    assert_eq!(g.ranged, 11);
    assert!(g.within_range >= 1 && g.within_range <= g.ranged);
}

/// `planner validate --explain ID --save-case DIR` writes the model, cluster and plan a run
/// was priced as, and `planner estimate` prices those files to the row's own prediction (step
/// time and peak memory), for a run of each stack: Megatron-Core with searched knobs and
/// interleaving, Megatron-DeepSpeed with its uneven split and BF16 optimizer, torchtitan's
/// FSDP with op-level checkpointing, llm-foundry's FSDP. An unknown id exits 2 naming the
/// closest one.
#[test]
fn explain_saves_a_case_that_estimate_reprices() {
    for id in [
        "mlm-h100-weak-70b",
        "bloom-sweep-0228-h12288-l106-tp4-pp12-dp8-mbs2-nh64",
        "torchtitan-a100-llama3-8b-selectiveop",
        "mpt-a100-80gb-30b-s8192-g8",
    ] {
        let dir = std::env::temp_dir().join(format!("planner-case-{}-{id}", std::process::id()));
        let d = dir.to_str().unwrap();
        let o = crate::cli::planner(&[
            "validate",
            "--explain",
            id,
            "--save-case",
            d,
            "--format",
            "json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{id}: {}", crate::cli::stderr(&o));
        let x: serde_json::Value = serde_json::from_str(&crate::cli::stdout(&o)).unwrap();
        assert_eq!(x["row"]["id"], id);
        let step = x["estimate"]["step_time_s"].as_f64().unwrap();
        let file = |f: &str| dir.join(f).to_str().unwrap().to_string();
        let (m, c, p) = (file("model.yaml"), file("cluster.yaml"), file("plan.json"));
        let o = crate::cli::planner(&[
            "estimate",
            "--model",
            &m,
            "--cluster",
            &c,
            "--plan",
            &p,
            "--format",
            "json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{id}: {}", crate::cli::stderr(&o));
        let e: serde_json::Value = serde_json::from_str(&crate::cli::stdout(&o)).unwrap();
        let again = e["step_time_s"].as_f64().unwrap();
        assert!(
            (again - step).abs() <= 1e-9 * step,
            "{id}: {again} vs {step}"
        );
        assert_eq!(
            e["memory_gib_per_gpu"], x["estimate"]["memory_gib_per_gpu"],
            "{id}"
        );
        assert_eq!(e["plan"], x["estimate"]["plan"], "{id}");
        std::fs::remove_dir_all(&dir).ok();
    }
    let o = crate::cli::planner(&["validate", "--explain", "mlm-h100-weak-1.7"]);
    let err = crate::cli::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("did you mean `mlm-h100-weak-1.7b`"), "{err}");
}

/// `--explain` refuses before writing anything: CSV (it prints a table or JSON, and the case
/// directory stays unmade), a skipped run (naming why and what to do), and `--group` beside
/// it; each exits 2.
#[test]
fn explain_refusals_exit_2_and_write_nothing() {
    let dir = std::env::temp_dir().join(format!("planner-case-csv-{}", std::process::id()));
    let d = dir.to_str().unwrap();
    // A run the validator skips: torchtitan's layout is not searched.
    let runs_dir = std::env::temp_dir().join(format!("planner-case-runs-{}", std::process::id()));
    std::fs::create_dir_all(&runs_dir).unwrap();
    let runs = runs_dir.join("runs.yaml");
    std::fs::write(&runs, NO_LAYOUT_RUN).unwrap();
    let runs = runs.to_str().unwrap();
    for (args, needle) in [
        (
            vec![
                "--explain",
                "mlm-h100-weak-70b",
                "--format",
                "csv",
                "--save-case",
                d,
            ],
            "prints a table or JSON",
        ),
        (
            vec!["--runs", runs, "--explain", "no-layout", "--save-case", d],
            "skipped: tensor/pipeline parallel sizes not published; explain a run",
        ),
        (
            vec!["--explain", "mlm-h100-weak-70b", "--group", "bloom-176b"],
            "cannot be used with",
        ),
        // Beside --group, clap does not enforce --save-case's need of --explain (QA).
        (
            vec!["--group", "bloom-176b", "--save-case", d],
            "it saves one run's case; give --explain ID",
        ),
    ] {
        let o = crate::cli::planner(&[&["validate"], &args[..]].concat());
        let err = crate::cli::stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!dir.exists(), "{args:?} wrote {d}");
    }
    std::fs::remove_dir_all(&runs_dir).ok();
}

/// One priced run of every group, its case written as `--save-case` writes it and read back
/// in process: the model, cluster (presets' devices inline, Omni-Path and RoCE networks, the
/// older CUDA contexts) and plan come back equal and price to the row's own step time and
/// memory.
#[test]
fn every_group_case_reads_back_to_the_same_prediction() {
    use planner::cost::estimate;
    use planner::spec::{ClusterSpec, ModelSpec, Plan, load_device};
    let runs = parse_runs("published-runs.yaml", PUBLISHED_RUNS).unwrap();
    let mut groups: Vec<&str> = Vec::new();
    for run in &runs {
        if groups.contains(&run.group.as_str()) {
            continue;
        }
        let Ok(x) = planner::validate::explain(run) else {
            continue;
        };
        groups.push(&run.group);
        let (id, c) = (&run.id, &x.case);
        let model = ModelSpec::from_yaml("m.yaml", &c.model.to_yaml(&[])).unwrap();
        let cluster =
            ClusterSpec::from_yaml("c.yaml", &c.cluster.to_yaml(&[]), &|g| load_device(g))
                .unwrap_or_else(|e| panic!("{id}: {e}"));
        let plan = Plan::from_json("p.json", &x.estimate.plan.to_json()).unwrap();
        assert_eq!(
            (&model, &cluster, &plan),
            (&c.model, &c.cluster, &x.estimate.plan),
            "{id}"
        );
        let e = estimate(&model, &cluster, &plan, None);
        assert_eq!(e.step_time_s, x.row.step_time_s, "{id}");
        assert_eq!(e.memory_gib_per_gpu, x.row.predicted_memory_gib, "{id}");
    }
    assert_eq!(groups.len(), 15, "{groups:?}");
}

/// A skipped row was not predicted: its prediction fields are null in JSON and empty in CSV
/// (they had read `predicted_fits: true`, 0 GiB, a 0 s step). A torchtitan run that publishes
/// no layout is skipped (only Megatron-Core's README rows have theirs searched).
#[test]
fn skipped_rows_carry_no_prediction() {
    // Beside a run of another group that publishes its layout: a file whose every row is
    // skipped compares nothing and is refused (`nothing_compared_is_bad_input`).
    let with_layout = NO_LAYOUT_RUN
        .replace("id: no-layout", "id: with-layout")
        .replace("group: torchtitan-user", "group: torchtitan-user-2")
        .replace(
            "parallel: {recompute: full}",
            "parallel: {tp: 1, pp: 1, dp: 8, recompute: full}",
        );
    let yaml = &format!("{NO_LAYOUT_RUN}{with_layout}");
    let dir = std::env::temp_dir().join(format!("planner-skipped-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("runs.yaml");
    std::fs::write(&path, yaml).unwrap();
    let args = ["validate", "--runs", path.to_str().unwrap(), "--format"];
    let v: serde_json::Value = serde_json::from_str(&crate::cli::stdout(&crate::cli::planner(
        &[&args[..], &["json"]].concat(),
    )))
    .unwrap();
    let skipped: Vec<&serde_json::Value> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["skipped"].is_null())
        .collect();
    assert_eq!(skipped.len(), 1);
    // Nothing compared is no error statistic, not 0% (it had read "-0.0%").
    for key in ["mean_abs_error", "max_abs_error", "mean_error", "spearman"] {
        assert!(v["groups"][0][key].is_null(), "{key}: {}", v["groups"][0]);
    }
    for r in skipped {
        for key in [
            "predicted_fits",
            "predicted_memory_gib",
            "step_time_s",
            "breakdown",
        ] {
            assert!(r[key].is_null(), "{key}: {r}");
        }
    }
    let csv = crate::cli::stdout(&crate::cli::planner(&[&args[..], &["csv"]].concat()));
    let row = csv.lines().find(|l| l.starts_with("no-layout,")).unwrap();
    assert!(row.contains(",,,false,,tensor/pipeline"), "{row}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A runs file that compares nothing is bad input (exit 2), in every format: an empty list,
/// or rows that are all skipped, each listed with its reason (both had exited 0 with an
/// empty summary).
#[test]
fn nothing_compared_is_bad_input() {
    let dir = std::env::temp_dir().join(format!("planner-nothing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, yaml, needle) in [
        ("empty.yaml", "[]\n", "the file lists no runs"),
        (
            "skipped.yaml",
            NO_LAYOUT_RUN,
            "every row was skipped:\n  no-layout: tensor/pipeline parallel sizes not published",
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, yaml).unwrap();
        for format in ["table", "json"] {
            let o = crate::cli::planner(&[
                "validate",
                "--runs",
                path.to_str().unwrap(),
                "--format",
                format,
            ]);
            assert_eq!(o.status.code(), Some(2), "{name} {format}");
            let err = crate::cli::stderr(&o);
            assert!(err.contains(needle), "{name}: {err}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The Megatron-Core README's strong-scaling runs (GPT 175B, 1152 sequences, 96 and 4608
/// H100s) publish no tensor or pipeline size: the validator searches them with the other
/// unpublished knobs, tensor parallelism inside a node and whole layers per stage, and prices
/// the fastest that fits — no layout it tried is faster. As measured (464.8 → 415.4 TFLOP/s,
/// "communication becomes more exposed at larger scale"), the per-GPU rate falls from 96 to
/// 4608 GPUs, where each replica holds 12 sequences instead of 384 and its data-parallel
/// reduction is a larger share of the step.
#[test]
fn strong_scaling_rows_search_their_layout() {
    use planner::cost::estimate;
    use planner::spec::{Recompute, Schedule};
    use planner::validate::adapt::case;
    let runs = parse_runs("published-runs.yaml", PUBLISHED_RUNS).unwrap();
    let priced = |id: &str| {
        let run = runs.iter().find(|r| r.id == id).unwrap();
        let row = planner::validate::validate_run(run);
        assert!(row.skipped.is_none(), "{id}: {:?}", row.skipped);
        for knob in ["tp", "pp", "dp", "mbs", "recompute", "vpp"] {
            assert!(row.searched.contains(&knob), "{id}: {:?}", row.searched);
        }
        let c = case(run).unwrap();
        let n = c.cluster.n_gpus();
        // A few layouts of the grid, each at its fastest micro-batch, recomputation and
        // interleaving that fit: none beats the row.
        let mut best_other = 0.0f64;
        for (tp, pp) in [(4, 8), (8, 4), (8, 8), (4, 12), (8, 12)] {
            let dp = n / (tp * pp);
            if !n.is_multiple_of(tp * pp) || !c.plan.global_batch.is_multiple_of(dp) {
                continue;
            }
            for v in [1, 2, 4] {
                for rc in Recompute::ALL {
                    let mut p = c.plan.clone();
                    (p.tp, p.pp, p.dp, p.vpp, p.mbs, p.recompute) = (tp, pp, dp, v, 1, rc);
                    p.schedule = if v > 1 {
                        Schedule::Interleaved
                    } else {
                        Schedule::OneFOneB
                    };
                    if !p.check(&c.model, &c.cluster).is_empty() {
                        continue;
                    }
                    let e = estimate(&c.model, &c.cluster, &p, None);
                    if e.fits {
                        best_other = best_other.max(e.tflops_per_gpu);
                    }
                }
            }
        }
        let predicted = row.predicted.unwrap();
        assert!(best_other > 0.0, "{id}: no sampled layout fits");
        assert!(predicted >= best_other, "{id}: {predicted} < {best_other}");
        (predicted, row.breakdown.dp_comm_s / row.step_time_s)
    };
    let (small, small_dp) = priced("mlm-h100-strong-177b-96gpu");
    let (large, large_dp) = priced("mlm-h100-strong-177b-4608gpu");
    assert!(large < small, "{large} vs {small}");
    assert!(large_dp > small_dp, "{large_dp} vs {small_dp}");
}

/// A runs file's silent misreadings are skipped rows naming the field: a group that names no
/// known stack (it had been priced as torchtitan FSDP, +56.8% on an SC'21 row), a ZeRO stage
/// that wrapped into range as a byte (259 → 3), measurements that are not positive, a status
/// other than ok/OOM, and an iteration time that contradicts the tokens per second. An A100
/// named with its power limit "(400W)" is the 80 GB part, not the 40 GB one.
#[test]
fn runs_file_misreadings_are_skipped_with_the_field() {
    let with = |id: &str, group: &str, gpu: &str, zero: &str, measured: &str, rc, prec| {
        format!(
            "- id: {id}
  group: {group}
  model: {{name: tiny, layers: 4, hidden: 512, heads: 8, vocab: 32000, seq_len: 1024}}
  hardware: {{gpu: '{gpu}', count: 8, gpus_per_node: 8}}
  parallel: {{tp: 2, pp: 1, dp: 4, recompute: {rc}, zero_stage: {zero}}}
  batch: {{micro_batch: 2, global_batch: 64}}
  precision: {prec}
  measured: {measured}
"
        )
    };
    let row = |id, group, gpu, zero, measured| with(id, group, gpu, zero, measured, "full", "bf16");
    let sound = "{iteration_time_s: 1.0}";
    let yaml = [
        row(
            "sound",
            "megatron-sc21-user",
            "A100-SXM4-80GB (400W)",
            "0",
            sound,
        ),
        row("no-stack", "my-own-runs", "A100-SXM4-80GB", "0", sound),
        row(
            "zero-259",
            "megatron-core-user",
            "H100-SXM-80GB",
            "259",
            sound,
        ),
        row(
            "negative",
            "megatron-core-user",
            "H100-SXM-80GB",
            "1",
            "{tokens_per_s: -5.0}",
        ),
        // 12 GPUs on 8-GPU nodes (it had read "the cluster has 16 GPUs").
        "- id: twelve
  group: torchtitan-user
  model: {name: tiny, layers: 4, hidden: 512, heads: 8, vocab: 32000, seq_len: 1024}
  hardware: {gpu: A100-SXM4-80GB, count: 12, gpus_per_node: 8}
  parallel: {tp: 1, pp: 1, dp: 12, recompute: full}
  batch: {micro_batch: 1, global_batch: 12}
  precision: bf16
  measured: {iteration_time_s: 1.0}
"
        .to_string(),
        // A step of 1e-300 s had been compared at −100%.
        row(
            "instant",
            "megatron-core-user",
            "H100-SXM-80GB",
            "1",
            "{iteration_time_s: 1.0e-300}",
        ),
        row(
            "crashed",
            "megatron-core-user",
            "H100-SXM-80GB",
            "1",
            "{iteration_time_s: 1.0, status: crashed}",
        ),
        // 64 × 1024 tokens in 1 s is 65536 tokens/s, not 30000.
        row(
            "disagree",
            "megatron-core-user",
            "H100-SXM-80GB",
            "1",
            "{iteration_time_s: 1.0, tokens_per_s: 30000}",
        ),
        with(
            "fp16",
            "megatron-sc21-user",
            "A100-SXM4-80GB",
            "0",
            sound,
            "full",
            "FP16",
        ),
        with(
            "rc-yes",
            "megatron-sc21-user",
            "A100-SXM4-80GB",
            "0",
            sound,
            "yes",
            "bf16",
        ),
        with(
            "int8",
            "megatron-sc21-user",
            "A100-SXM4-80GB",
            "0",
            sound,
            "full",
            "int8",
        ),
        with(
            "mxfp8",
            "megatron-core-user",
            "H100-SXM-80GB",
            "1",
            sound,
            "full",
            "'fp8 (FP8-MX)'",
        ),
        "- id: preset-moe
  group: megatron-core-user
  model: {name: qwen, layers: 48, hidden: 2048, heads: 32, kv_heads: 4, ffn_hidden: 768, vocab: 151936, seq_len: 2048, experts: 128, top_k: 8, preset: qwen3-30b-a3b}
  hardware: {gpu: H100-SXM-80GB, count: 8, gpus_per_node: 8}
  parallel: {tp: 1, pp: 1, dp: 8, ep: 8, recompute: 'selective (modules: moe_act, layernorm)', zero_stage: 1}
  batch: {micro_batch: 1, global_batch: 64}
  precision: bf16
  measured: {iteration_time_s: 1.0}
"
        .to_string(),
        with(
            "fp8-cs",
            "megatron-core-user",
            "H100-SXM-80GB",
            "1",
            sound,
            "full",
            "'fp8 (FP8-CS)'",
        ),
        with(
            "blockwise",
            "megatron-core-user",
            "H100-SXM-80GB",
            "1",
            sound,
            "full",
            "'fp8 (blockwise)'",
        ),
        with(
            "full-modules",
            "megatron-core-user",
            "H100-SXM-80GB",
            "1",
            sound,
            "'full (modules: moe_act)'",
            "bf16",
        ),
        "- id: preset-ffn
  group: megatron-core-user
  model: {name: qwen, layers: 48, hidden: 2048, heads: 32, kv_heads: 4, ffn_hidden: 9999, vocab: 151936, seq_len: 2048, experts: 128, top_k: 8, preset: qwen3-30b-a3b}
  hardware: {gpu: H100-SXM-80GB, count: 8, gpus_per_node: 8}
  parallel: {tp: 1, pp: 1, dp: 8, ep: 8, recompute: full}
  batch: {micro_batch: 1, global_batch: 64}
  precision: bf16
  measured: {iteration_time_s: 1.0}
"
        .to_string(),
        "- id: preset-topk
  group: megatron-core-user
  model: {name: qwen, layers: 48, hidden: 2048, heads: 32, kv_heads: 4, vocab: 151936, seq_len: 2048, experts: 128, top_k: 200, preset: qwen3-30b-a3b}
  hardware: {gpu: H100-SXM-80GB, count: 8, gpus_per_node: 8}
  parallel: {tp: 1, pp: 1, dp: 8, ep: 8, recompute: full}
  batch: {micro_batch: 1, global_batch: 64}
  precision: bf16
  measured: {iteration_time_s: 1.0}
"
        .to_string(),
        "- id: preset-mismatch
  group: megatron-core-user
  model: {name: qwen, layers: 24, hidden: 2048, heads: 32, kv_heads: 4, vocab: 151936, seq_len: 2048, experts: 128, top_k: 8, preset: qwen3-30b-a3b}
  hardware: {gpu: H100-SXM-80GB, count: 8, gpus_per_node: 8}
  parallel: {tp: 1, pp: 1, dp: 8, ep: 8, recompute: full}
  batch: {micro_batch: 1, global_batch: 64}
  precision: bf16
  measured: {iteration_time_s: 1.0}
"
        .to_string(),
        // One group measured in two units has no throughput rank.
        row(
            "t",
            "megatron-sc21-mixed",
            "A100-SXM4-80GB",
            "0",
            "{iteration_time_s: 2.0}",
        ),
        row(
            "f",
            "megatron-sc21-mixed",
            "A100-SXM4-80GB",
            "0",
            "{tflops_per_gpu: 90.0}",
        ),
    ]
    .concat();
    let runs = parse_runs("runs.yaml", &yaml).unwrap();
    let report = validate(&runs, None);
    let why = |id: &str| {
        let r = report.rows.iter().find(|r| r.id == id).unwrap();
        r.skipped.clone().unwrap_or_default()
    };
    assert_eq!(why("sound"), "");
    let mixed = report
        .groups
        .iter()
        .find(|g| g.group == "megatron-sc21-mixed")
        .unwrap();
    assert_eq!((mixed.compared, mixed.spearman), (2, None));
    let c = planner::validate::adapt::case(&runs[0]).unwrap();
    assert_eq!(c.cluster.gpu.name, "a100-sxm4-80gb");
    // A preset prices what the row's fields cannot say (QK norm, head size 128 on hidden
    // 2048) at the row's sequence length, with the recipe's recomputed modules.
    let moe = runs.iter().find(|r| r.id == "preset-moe").unwrap();
    let moe = planner::validate::adapt::case(moe).unwrap();
    assert!(moe.model.qk_norm && moe.model.head_dim() == 128);
    assert_eq!((moe.model.seq_len, moe.model.name.as_str()), (2048, "qwen"));
    assert_eq!(moe.plan.recompute_modules.to_string(), "moe_act,layernorm");
    // NeMo's "FP8-CS" is current scaling (QA: it had been priced as delayed scaling).
    let cs = runs.iter().find(|r| r.id == "fp8-cs").unwrap();
    let cs = planner::validate::adapt::case(cs).unwrap();
    assert_eq!(cs.plan.fp8_recipe, planner::spec::Fp8Recipe::Tensorwise);
    let fp16 = runs.iter().find(|r| r.id == "fp16").unwrap();
    let fp16 = planner::validate::adapt::case(fp16).unwrap();
    assert_eq!(fp16.plan.dtype, planner::units::Dtype::Fp16);
    for (id, needle) in [
        ("rc-yes", "parallel.recompute `yes`"),
        ("int8", "precision `int8`"),
        ("no-stack", "group `my-own-runs` names no software stack"),
        ("zero-259", "parallel.zero_stage = 259"),
        ("negative", "measured.tokens_per_s = -5"),
        ("instant", "measured.iteration_time_s = 1e-300"),
        ("twelve", "a part-filled node is not modelled"),
        ("crashed", "measured.status `crashed`"),
        ("disagree", "implies 65536 tokens/s"),
        (
            "mxfp8",
            "block-scaled FP8 (MXFP8, sub-channel) is not priced",
        ),
        (
            "blockwise",
            "block-scaled FP8 (MXFP8, sub-channel) is not priced",
        ),
        (
            "full-modules",
            "modules are what selective recomputation re-runs",
        ),
        (
            "preset-ffn",
            "model.ffn_hidden 9999, but the preset `qwen3-30b-a3b` has 768",
        ),
        (
            "preset-mismatch",
            "model.layers 24, but the preset `qwen3-30b-a3b` has 48",
        ),
        // In words, not Rust's `Some((128, 200))` (QA round 7).
        (
            "preset-topk",
            "model experts 128, top_k 200, but the preset `qwen3-30b-a3b` has experts 128, top_k 8",
        ),
    ] {
        assert!(
            why(id).contains(needle),
            "{id}: `{needle}` not in `{}`",
            why(id)
        );
    }
}

/// torchtitan's published peak memory for Llama 3.1 8B (FSDP, local batch 2, sequence 8192,
/// selective op checkpointing, eager; pytorch/torchtitan docs/performance.md @eaea6f6a,
/// Tables 1 and 3, torchtitan 9dec370): 82.4 GiB on 8 GPUs, 67.0 GiB on 128. These are the
/// caching allocator's reserved bytes, at or above what is allocated; the planner predicts
/// allocation (with its 5% fragmentation allowance), so it reads below them, by 6.6% and
/// 6.1%. It had read 14% and 15% below: the loss's 8 bytes per logit (fp32 copy, nll and
/// log-softmax gradients beside the saved output: 128,256 × 16,384 logits, 8.4 GB) and the
/// root module FSDP2 keeps gathered (embedding and head, 1.05 B parameters, 2.1 GB) were
/// counted as 6 bytes per logit and not at all. Going from 8 to 128 GPUs shards the model
/// state 16 times finer: measured −15.4 GiB, predicted −14.0 GiB.
#[test]
fn torchtitan_llama3_8b_memory_tracks_the_published_reading() {
    use planner::cost::estimate;
    use planner::spec::{Framework, Plan, Recompute, load_cluster, load_model};
    let model = load_model("llama3-8b").unwrap();
    let cluster = load_cluster("h100-x1024").unwrap();
    let gib = |gpus: u64| {
        let mut p = Plan::new(gpus, 1, 1, 2, 2 * gpus, 8192);
        p.recompute = Recompute::Selective;
        p.zero = 3;
        p.framework = Framework::Torchtitan;
        p.overlap_grad_reduce = true;
        estimate(&model, &cluster.with_gpus(gpus).unwrap(), &p, None).memory_gib_per_gpu
    };
    let (small, large) = (gib(8), gib(128));
    for (pred, measured) in [(small, 82.4), (large, 67.0)] {
        let below = 1.0 - pred / measured;
        assert!((0.0..0.08).contains(&below), "{pred} vs {measured}");
    }
    assert!(((small - large) - 15.4).abs() < 1.5, "{small} − {large}");
}

/// A runs file's unknown keys are refused wherever they stand (a misspelt `virtual_stage: 3`
/// had been dropped and the row priced without interleaving, exit 0), and the layout keys
/// kept beside the plan are read: CPU offload and other FSDP shardings skip the row, a
/// gradient-accumulation count that contradicts the batch skips it naming both.
#[test]
fn runs_file_keys_are_known_or_refused() {
    let row = |id: &str, parallel: &str, batch: &str| {
        format!(
            "- id: {id}
  group: megatron-core-user
  model: {{name: tiny, layers: 4, hidden: 512, heads: 8, vocab: 32000, seq_len: 1024}}
  hardware: {{gpu: H100-SXM-80GB, count: 8, gpus_per_node: 8}}
  parallel: {{tp: 2, pp: 2, dp: 2, recompute: full, {parallel}}}
  batch: {{micro_batch: 1, {batch}}}
  precision: bf16
  measured: {{iteration_time_s: 1.0}}
"
        )
    };
    let dir = std::env::temp_dir().join(format!("planner-typo-runs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("runs.yaml");
    std::fs::write(
        &path,
        row("typo", "virtual_stage: 2", "global_batch: 64")
            + &row("stray", "virtual_stages: 2", "global_batch: 64")
            + "  colour: red\n",
    )
    .unwrap();
    let o = crate::cli::planner(&["validate", "--runs", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).ok();
    let err = crate::cli::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown field `virtual_stage`") && err.contains("unknown field `colour`"),
        "{err}"
    );
    let yaml = [
        row(
            "sound",
            "virtual_stages: 2",
            "global_batch: 64, grad_accum: 32",
        ),
        row(
            "offload",
            "activation_cpu_offload: true",
            "global_batch: 64",
        ),
        row("hybrid", "fsdp_sharding: HYBRID_SHARD", "global_batch: 64"),
        // 3 micro-batches of 1 on each of 2 data-parallel ranks are 6 sequences, not 64.
        row("accum", "schedule: 1F1B", "global_batch: 64, grad_accum: 3"),
        // Megatron-Core rows default to the distributed optimizer unless the file says not.
        row(
            "plain-adam",
            "distributed_optimizer: false",
            "global_batch: 64",
        ),
        row("zero-text", "zero_stage: SHARD_GRAD_OP", "global_batch: 64"),
    ]
    .concat();
    let report = validate_runs_json("known-keys", &yaml);
    assert_eq!(skipped_reason(&report, "sound"), None);
    let plan = |id: &str| {
        let rows = report["rows"].as_array().unwrap();
        let r = rows.iter().find(|r| r["id"] == id).unwrap();
        r["plan"].as_str().unwrap().to_string()
    };
    assert!(plan("sound").contains(" zero1"), "{}", plan("sound"));
    assert!(
        plan("plain-adam").contains(" zero0"),
        "{}",
        plan("plain-adam")
    );
    for (id, needle) in [
        ("offload", "activation_cpu_offload = true"),
        ("hybrid", "fsdp_sharding = HYBRID_SHARD"),
        ("accum", "global batch of 6, not batch.global_batch = 64"),
        (
            "zero-text",
            "zero_stage = SHARD_GRAD_OP: write the stage as a number",
        ),
    ] {
        let why = skipped_reason(&report, id).unwrap_or_else(|| panic!("{id} was predicted"));
        assert!(why.contains(needle), "{id}: `{needle}` not in `{why}`");
    }
}
