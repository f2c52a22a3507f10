//! Issue 8: `planner report` renders every file, the files decode (PNG) and parse (SVG), the
//! Markdown holds each table, and the numbers in the tables are `estimate`'s for the same plan,
//! re-priced here independently of the report code.

use crate::cli::{planner, stderr, stdout};
use planner::cost::{Estimate, estimate};
use planner::search::{Space, compare, search};
use planner::spec::{ClusterSpec, ModelSpec, load_cluster, load_model};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn out_dir(name: &str) -> PathBuf {
    super::cli::fresh_dir(&format!("report-{name}"))
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/report")
        .join(name)
        .display()
        .to_string()
}

/// The case study of the issue: BERT-large on 8 GPUs across 4 nodes, with a claim, a price
/// and a verify file.
fn bert_args(out: &Path) -> Vec<String> {
    [
        "report",
        "--model",
        "bert-large",
        "--cluster",
        "a100-4x2",
        "--gpus",
        "1,2,...,8",
        "--global-batch",
        "256",
        "--tokens",
        "131e9",
        "--gpu-hour-price",
        "2.5",
        "--claim",
        "8=6",
        "--verify",
        &fixture("verify.json"),
        "--out",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(args: &[String]) -> std::process::Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    planner(&refs)
}

/// The rows of the first Markdown table after `heading`, cells trimmed, backticks removed.
fn table_after(md: &str, heading: &str) -> Vec<Vec<String>> {
    let start = md
        .find(heading)
        .unwrap_or_else(|| panic!("no `{heading}` in the report"));
    md[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().replace('`', ""))
                .collect()
        })
        .collect()
}

fn num(s: &str) -> f64 {
    s.trim_end_matches('%')
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("not a number: `{s}`"))
}

/// `cell` is `x` rounded as the report rounds it: equal within half a unit of its last digit.
fn same(cell: &str, x: f64, what: &str) {
    let digits = cell
        .trim_end_matches('%')
        .split('.')
        .nth(1)
        .map_or(0, str::len);
    let scale = if cell.ends_with('%') { 100.0 } else { 1.0 };
    let unit = 10f64.powi(-(digits as i32)) / scale;
    let v = num(cell) / scale;
    assert!(
        (v - x).abs() <= 0.5 * unit + 1e-12 * x.abs(),
        "{what}: table says {cell}, estimate says {x}"
    );
}

fn png_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

fn svg_size(path: &Path) -> (u32, u32) {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", path.display()));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let dim = |a: &str| root.attribute(a).unwrap().parse::<u32>().unwrap();
    // Text is there as text, in the font the PNG embeds.
    assert!(doc.descendants().any(|n| n.tag_name().name() == "text"));
    (dim("width"), dim("height"))
}

/// The best plan of each method at every count, found here with the library's search.
fn methods(model: &ModelSpec, cluster: &ClusterSpec, n: u64) -> BTreeMap<&'static str, Estimate> {
    let c = compare(
        model,
        &cluster.with_gpus(n).unwrap(),
        None,
        &Space::new(256, 512),
    )
    .unwrap();
    let names = [
        ("dp-only", "DP-only"),
        ("tp-only", "TP-only"),
        ("pp-only", "PP-only"),
        ("hybrid", "best hybrid"),
    ];
    names
        .iter()
        .filter_map(|(m, label)| {
            let s = c.strategies.iter().find(|s| s.name == *m).unwrap();
            s.best.clone().map(|e| (*label, e))
        })
        .chain(std::iter::once(("one GPU", c.single)))
        .collect()
}

fn check_scaling_table(md: &str, model: &ModelSpec, cluster: &ClusterSpec) {
    let rows = table_after(md, "## 1. Speedup");
    assert_eq!(rows.len(), 4 * 4, "four methods at four counts");
    let mut checked = 0;
    for n in [1u64, 2, 4, 8] {
        let best = methods(model, cluster, n);
        let single = &best["one GPU"];
        for r in rows.iter().filter(|r| r[0] == n.to_string()) {
            let Some(e) = best.get(r[1].as_str()) else {
                assert!(r[2].starts_with("no feasible plan"), "{r:?}");
                continue;
            };
            assert_eq!(r[2], e.plan.short(), "{n} GPUs, {}", r[1]);
            // Re-price the same plan from scratch.
            let again = estimate(model, &cluster.with_gpus(n).unwrap(), &e.plan, None);
            let rel = (num(&r[3]) - again.step_time_s).abs() / again.step_time_s;
            assert!(rel < 5e-4, "step time {} vs {}", r[3], again.step_time_s);
            same(&r[4], again.tokens_per_s, "tokens/s");
            let speedup = single.step_time_s / again.step_time_s;
            assert!(
                (num(&r[5]) - speedup).abs() / speedup < 5e-4,
                "speedup {}",
                r[5]
            );
            same(&r[6], speedup / n as f64, "efficiency");
            same(&r[7], again.memory_gib_per_gpu, "memory");
            checked += 1;
        }
    }
    assert!(checked >= 12, "{checked} rows re-priced");
}

fn check_breakdown_and_memory(md: &str, model: &ModelSpec, cluster: &ClusterSpec, knee: u64) {
    let c = cluster.with_gpus(knee).unwrap();
    let mut plans: BTreeMap<String, Estimate> = search(model, &c, None, &Space::new(256, 512), 5)
        .top
        .into_iter()
        .map(|e| (e.plan.short(), e))
        .collect();
    for e in methods(model, cluster, knee).into_values() {
        plans.insert(e.plan.short(), e);
    }
    let rows = table_after(md, "## 3. Step-time breakdown");
    assert!(rows.len() >= 5, "{rows:?}");
    for r in &rows {
        let e = estimate(model, &c, &plans[&r[1]].plan, None);
        let b = &e.breakdown;
        let want = [
            e.step_time_s,
            b.compute_s,
            b.recompute_s,
            b.tp_comm_s,
            b.pp_comm_s,
            b.dp_comm_s,
            b.other_comm_s,
            b.bubble_s,
            b.optimizer_s,
        ];
        for (cell, x) in r[2..11].iter().zip(want) {
            let tol = 5e-4 * x.abs().max(1e-9);
            assert!((num(cell) - x).abs() <= tol, "{}: {cell} vs {x}", r[1]);
        }
        assert_eq!(r[11], e.bottleneck);
    }
    let mem = table_after(md, "## 4. Memory per GPU");
    assert_eq!(mem.len(), rows.len());
    for r in &mem {
        let e = estimate(model, &c, &plans[&r[1]].plan, None);
        let m = &e.memory_gib;
        same(&r[2], e.memory_gib_per_gpu, "peak");
        for (cell, x) in
            r[3..8]
                .iter()
                .zip([m.weights, m.grads, m.optimizer, m.activations, m.other])
        {
            same(cell, x, &r[1]);
        }
        assert_eq!(r[9], if e.fits { "yes" } else { "no" });
    }
}

/// Inputs at the top, then every section's table; the verify fixture's numbers.
fn check_sections(md: &str) {
    for needle in [
        "## Inputs",
        "| calibration | none:",
        "| tool | planner ",
        "--gpus 1,2,4,8",
        "### Claims checked",
        "## 1. Speedup",
        "## 2. Time to train",
        "## 3. Step-time breakdown",
        "## 4. Memory per GPU",
        "## 5. Pipeline timeline",
        "## 6. Predicted against measured",
        "| GPUs | claimed speedup |",
        "| GPUs | plan | step time (s) | tokens/s | MFU | days | GPU-hours | cost ($) |",
        "| stage | busy (s) |",
        "| step | 0.3125 | 0.3472 | -10.0% |",
        "| bubble | 0 | not measured | - |",
        "| GEMM | 0.2100 | 0.2288 | -8.2% |",
        "| peak memory (GiB) | 9.80 | 10.60 | -7.5% |",
        "plan `dp=8 tp=1 pp=1 mbs=8 rc=none zero1`",
    ] {
        assert!(md.contains(needle), "report.md lacks `{needle}`");
    }
}

/// Charts: PNG decodes at the size the layout gives, SVG parses at the same size, the HTML
/// inlines every PNG.
fn check_charts(dir: &Path, md: &str) {
    let plans_shown = table_after(md, "## 3. Step-time breakdown").len() as u32;
    let stages = table_after(md, "## 5. Pipeline timeline").len() as u32;
    let timeline_h = 170 + (560 / stages).clamp(10, 40) * stages;
    let expected = [
        ("speedup", (1200, 560)),
        ("time-to-train", (1200, 560)),
        ("breakdown", (1200, 190 + 40 * plans_shown)),
        ("memory", (1200, 190 + 40 * plans_shown)),
        ("timeline", (1200, timeline_h)),
        ("verify", (1200, 190 + 40 * 10)),
    ];
    for (name, size) in expected {
        let png = dir.join(format!("{name}.png"));
        assert_eq!(png_size(&png), size, "{name}.png");
        assert_eq!(
            svg_size(&dir.join(format!("{name}.svg"))),
            size,
            "{name}.svg"
        );
        assert!(
            md.contains(&format!("]({name}.png)")),
            "{name} not in report.md"
        );
        let bytes = std::fs::read(&png).unwrap();
        assert!(bytes.len() < 400_000, "{name}.png is {} bytes", bytes.len());
    }
    // The HTML stands alone: every chart inlined as a PNG data URI, no image file referenced.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 6);
    assert!(!html.contains("src=\"speedup.png\""));
    assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
    let no_tmp = std::fs::read_dir(dir)
        .unwrap()
        .all(|f| !f.unwrap().file_name().to_string_lossy().contains(".tmp-"));
    assert!(no_tmp, "a temporary file was left behind");
}

/// The same command writes byte-identical files (only the --out path differs).
fn check_deterministic(dir: &Path) {
    let again = out_dir("bert-again");
    let o = run(&bert_args(&again));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for f in std::fs::read_dir(dir).unwrap() {
        let name = f.unwrap().file_name();
        let mut b = std::fs::read(again.join(&name)).unwrap();
        if name == "report.md" || name == "report.html" {
            let (d1, d2) = (dir.display().to_string(), again.display().to_string());
            b = String::from_utf8(b).unwrap().replace(&d2, &d1).into_bytes();
        }
        assert!(
            std::fs::read(dir.join(&name)).unwrap() == b,
            "{name:?} differs"
        );
    }
    let _ = std::fs::remove_dir_all(&again);
}

#[test]
fn report_files_decode_parse_and_match_estimate() {
    let dir = out_dir("bert");
    let o = run(&bert_args(&dir));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("knee:"), "{}", stdout(&o));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let model = load_model("bert-large").unwrap();
    let cluster = load_cluster("a100-4x2").unwrap();
    check_sections(&md);
    check_scaling_table(&md, &model, &cluster);
    let knee_row = table_after(&md, "## 2. Time to train")
        .into_iter()
        .find(|r| r.last().is_some_and(|c| c.contains("knee")))
        .expect("a knee row");
    let knee: u64 = knee_row[0].parse().unwrap();
    check_breakdown_and_memory(&md, &model, &cluster, knee);
    // Time to train: GPU-hours and cost follow the plan's throughput.
    let e = methods(&model, &cluster, knee)["best hybrid"].clone();
    // Whole steps of the plan's global batch, each its step time.
    let per_step = (e.plan.global_batch * e.plan.seq_len) as f64;
    let secs = (131e9 / per_step).ceil() * e.step_time_s;
    same(&knee_row[6], knee as f64 * secs / 3600.0, "GPU-hours");
    same(&knee_row[7], 2.5 * knee as f64 * secs / 3600.0, "cost");
    check_charts(&dir, &md);
    check_deterministic(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without --global-batch a report studies one batch of about 4 M tokens for every GPU
/// count, a multiple of all of them: 4,194,304 / 1,000 → 4,195 sequences → 4,200 for 1 and 8 GPUs
/// (it had been a multiple of 1, so that at 1,024 GPUs DP-only found no plan that `compare`
/// found). The plan-space line carries it with the sequence length, as flags `estimate` reads.
#[test]
fn default_global_batch_is_a_multiple_of_every_gpu_count() {
    let dir = out_dir("default-batch");
    let o = planner(&[
        "report",
        "--model",
        "gpt2-xl",
        "--cluster",
        "a100-4x2",
        "--gpus",
        "1,8",
        "--seq-len",
        "1000",
        "--out",
        &dir.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("--global-batch 4200 --seq-len 1000 --framework"),
        "{md}"
    );
    // A multiple of every count, not only the largest: 32 and 40 GPUs share lcm 160, so 4,195
    // sequences round to 4,320 (a multiple of 40 alone, 4,200, left DP-only without a plan at
    // 32).
    let o = planner(&[
        "report",
        "--model",
        "gpt2-xl",
        "--cluster",
        "a100-80g-x1024",
        "--gpus",
        "32,40",
        "--seq-len",
        "1000",
        "--out",
        &dir.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("--global-batch 4320 --seq-len 1000"), "{md}");
    assert!(!md.contains("DP-only | no feasible plan"), "{md}");
    // The regenerate command carries the framework the report was priced for (it had been
    // dropped, regenerating a Megatron report of a torchtitan one).
    let o = planner(&[
        "report",
        "--model",
        "gpt2-xl",
        "--cluster",
        "a100-4x2",
        "--gpus",
        "1,8",
        "--seq-len",
        "1000",
        "--framework",
        "torchtitan",
        "--out",
        &dir.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let regenerate = md
        .lines()
        .find(|l| l.starts_with("| regenerate |"))
        .unwrap();
    assert!(
        regenerate.contains(" --framework torchtitan "),
        "{regenerate}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_model_that_fits_nowhere_still_gets_a_report_and_exit_1() {
    let dir = out_dir("gpt3");
    let o = planner(&[
        "report",
        "--model",
        "gpt3-175b",
        "--cluster",
        "a100x8",
        "--gpus",
        "4,8",
        "--global-batch",
        "64",
        "--out",
        &dir.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("error: no GPU count studied has a plan that fits"),
        "{}",
        stderr(&o)
    );
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("**No GPU count studied has a plan that fits**"));
    assert!(
        md.contains("| 8 | best hybrid | no feasible plan: out of memory |"),
        "{md}"
    );
    assert!(md.contains("does not fit one GPU"));
    assert_eq!(png_size(&dir.join("time-to-train.png")), (1200, 560));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn report_input_mistakes_are_exit_2_naming_the_flag() {
    let dir = out_dir("bad").display().to_string();
    let base = [
        "report",
        "--model",
        "bert-large",
        "--cluster",
        "a100-4x2",
        "--out",
        &dir,
    ];
    let cases: [(&[&str], &str); 9] = [
        (
            &["--gpus", "3"],
            "--gpus: 3 is not a valid part of cluster `a100-4x2`",
        ),
        (&["--gpus", "2,4,...,10"], "does not reach 10"),
        (&["--tokens", "0"], "--tokens"),
        (&["--tokens", "1e300"], "1e6 to 1e16"),
        (&["--gpu-hour-price", "1e300"], "0 to 10000"),
        (
            &["--gpus", "2,4", "--claim", "4=1e300"],
            "--claim `4=1e300`",
        ),
        (&["--gpus", "2,4", "--claim", "8=6"], "not among --gpus"),
        (&["--knee-efficiency", "1.5"], "--knee-efficiency"),
        (&["--verify", "Cargo.toml"], "`(document)` not JSON"),
    ];
    for (extra, needle) in cases {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let o = planner(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(
            err.contains(needle),
            "{extra:?}: expected `{needle}` in {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A claim above N× on N GPUs is called superlinear in its verdict (a claimed 100× on 8
/// GPUs had read only "the planner predicts less than claimed"); a sublinear one is not.
#[test]
fn superlinear_claims_are_named() {
    let out = out_dir("superlinear");
    let args: Vec<String> = [
        "report",
        "--model",
        "gpt2-xl",
        "--cluster",
        "a100x8",
        "--gpus",
        "1,8",
        "--global-batch",
        "64",
        "--tokens",
        "1e9",
        "--claim",
        "8=100",
        "--claim",
        "8=4",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.display().to_string()])
    .collect();
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let rows = table_after(&md, "### Claims checked");
    let verdicts: Vec<&str> = rows.iter().map(|r| r[7].as_str()).collect();
    assert_eq!(verdicts.len(), 2, "{rows:?}");
    assert!(
        verdicts[0].starts_with("a superlinear claim (above 8×); "),
        "{verdicts:?}"
    );
    assert!(!verdicts[1].contains("superlinear"), "{verdicts:?}");
}
