//! `planner verify` end to end (issue 7): the cpu backend calibrated and then verifying a
//! small GPT under three plans on 2 thread-devices; refusals with clear messages (no GPU, no
//! cpu profile, past the memory limit); `--plan` files, `--write-back`, `suggest --verify`.

use crate::cli::{planner, stderr, stdout};
use serde_json::Value;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    super::cli::fresh_dir(&format!("verify-{name}"))
}

use super::cli::write_in as write;

/// The issue's small GPT: 4 layers, hidden 512, seq 256 (8 heads, 8192-token vocabulary).
const SMALL: &str =
    "name: small-gpt\narch: gpt\nlayers: 4\nhidden: 512\nheads: 8\nvocab: 8192\nseq_len: 256\n";

/// A 2-layer GPT that runs a step in milliseconds.
const TINY: &str =
    "name: tiny\narch: gpt\nlayers: 2\nhidden: 64\nheads: 2\nvocab: 256\nseq_len: 64\n";

/// Two "GPUs" in one node: the plans' layout; the cpu backend runs them as 2 thread-devices.
const TWO: &str = "name: two\ngpu: a100-sxm4-80gb\nnodes: 1\ngpus_per_node: 2\n\
                   intra_node: {bw_gbytes_s: 10}\n";

/// A hand-written cpu profile (GEMMs at 10 GFLOP/s, 10 GB/s copies), for the tests that only
/// check plumbing.
const FAKE_CPU_PROFILE: &str = r#"{"name": "fake-cpu", "meta": {"device": "cpu", "backend": "cpu"},
  "gemm": [{"dtype": "bf16", "m": 64, "n": 64, "k": 64, "seconds": 5.24288e-5}],
  "hbm_gbytes_s": 10.0, "copies": [{"bytes": 1048576, "seconds": 0.0002097152}],
  "collectives": []}"#;

fn json(o: &std::process::Output) -> Value {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// One plan verified.
struct Row {
    plan: &'static str,
    predicted: f64,
    measured: f64,
    /// Step-to-step spread of the run: (max − min) / median.
    spread: f64,
    /// How fast the cores ran around the run relative to the calibration.
    host_speed: f64,
    error: f64,
}

impl Row {
    /// Whether something else on the machine disturbed the run: its steps spread by more
    /// than 10%, or the cores ran more than 10% off the calibration's speed around it.
    fn disturbed(&self) -> bool {
        self.spread > 0.10 || (self.host_speed - 1.0).abs() > 0.10
    }

    fn show(&self) -> String {
        format!(
            "\n{}: predicted {:.3} s, measured {:.3} s ({:+.1}%), spread {:.1}%, host speed {:.2}",
            self.plan,
            self.predicted,
            self.measured,
            100.0 * self.error,
            100.0 * self.spread,
            self.host_speed
        )
    }
}

/// Calibrates the cores in this test run: the model's own GEMM shapes at tp 1 and 2, copies,
/// and collectives between the 2 thread-devices up to the gradient all-reduce's 64 MiB.
fn calibrate(model: &str, cluster: &str, prof: &str) {
    let o = planner(&[
        "calibrate",
        "--cluster",
        cluster,
        "--backend",
        "cpu",
        "--model",
        model,
        "--devices",
        "2",
        "--max-mbs",
        "1",
        "--max-bytes",
        "67108864",
        "--budget-s",
        "20",
        "--out",
        prof,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// Verifies one plan: Megatron's unfused attention (batched GEMMs + softmax, which the cpu
/// runs exactly as the cost model prices them), 8 sequences per step, 5 timed steps.
fn verify(model: &str, cluster: &str, prof: &str, plan: &'static str, flag: &str) -> Row {
    let o = planner(&[
        "verify",
        "--model",
        model,
        "--cluster",
        cluster,
        flag,
        "2",
        "--global-batch",
        "8",
        "--attention",
        "unfused",
        "--backend",
        "cpu",
        "--calibration",
        prof,
        "--steps",
        "5",
        "--format",
        "json",
    ]);
    let v = json(&o);
    // The contract `planner report --verify` reads.
    for key in ["step_time_s", "breakdown", "memory_gib_per_gpu", "classes"] {
        assert!(!v["predicted"][key].is_null(), "predicted.{key}: {v}");
    }
    for key in [
        "step_time_s",
        "spread",
        "classes",
        "peak_memory_gib",
        "host_speed",
    ] {
        assert!(!v["measured"][key].is_null(), "measured.{key}: {v}");
    }
    assert_eq!(v["measured"]["step_times_s"].as_array().unwrap().len(), 5);
    assert!(v["error"]["classes"]["gemm_s"].is_number(), "{v}");
    let f = |x: &Value| x.as_f64().unwrap();
    let row = Row {
        plan,
        predicted: f(&v["predicted"]["step_time_s"]),
        measured: f(&v["measured"]["step_time_s"]),
        spread: f(&v["measured"]["spread"]),
        host_speed: f(&v["measured"]["host_speed"]),
        error: f(&v["error"]["step_time"]),
    };
    assert!((row.predicted / row.measured - 1.0 - row.error).abs() < 1e-9);
    row
}

/// The Done-when of issue 7. The machine is shared: when a plan misses by 15% on a run that
/// something else disturbed (`Row::disturbed`), the cores are calibrated again and that plan
/// verified again, twice at most; a miss on an undisturbed run fails at once.
#[test]
fn issue_7_cpu_verify_predicts_three_plans_on_two_ranks_within_15_percent() {
    let dir = tmp("three");
    let model = write(&dir, "small.yaml", SMALL);
    let cluster = write(&dir, "two.yaml", TWO);
    let prof = dir.join("cpu").display().to_string();
    calibrate(&model, &cluster, &prof);
    let mut rows: Vec<Row> = Vec::new();
    let mut log = String::new();
    for (plan, flag) in [("tp=2", "--tp"), ("pp=2", "--pp"), ("dp=2", "--dp")] {
        let mut row = verify(&model, &cluster, &prof, plan, flag);
        for _ in 0..2 {
            if row.error.abs() < 0.15 || !row.disturbed() {
                break;
            }
            log += &format!("{} (disturbed: calibrated again)", row.show());
            calibrate(&model, &cluster, &prof);
            row = verify(&model, &cluster, &prof, plan, flag);
        }
        rows.push(row);
    }
    let table: String = log + &rows.iter().map(Row::show).collect::<String>();
    eprintln!("issue 7 cpu verify:{table}");
    for r in &rows {
        assert!(
            r.error.abs() < 0.15,
            "{} off by more than 15%:{table}",
            r.plan
        );
    }
    // Where two plans' measured times differ by more than both runs' spread, the prediction
    // orders them the same way.
    for a in &rows {
        for b in &rows {
            let apart =
                (a.measured - b.measured).abs() > a.spread * a.measured + b.spread * b.measured;
            if apart && a.measured < b.measured {
                assert!(
                    a.predicted < b.predicted,
                    "{} measured faster than {} but predicted slower:{table}",
                    a.plan,
                    b.plan
                );
            }
        }
    }
}

#[test]
fn issue_7_cuda_backend_without_gpu_exits_2() {
    if planner::exec::cuda::driver_present() {
        eprintln!("a CUDA driver is present: the no-GPU refusal cannot be checked here");
        return;
    }
    let o = planner(&[
        "verify",
        "--model",
        "gpt2-xl",
        "--cluster",
        "h100x8",
        "--gpus",
        "1",
        "--global-batch",
        "8",
        "--backend",
        "cuda",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("libcuda.so") && err.contains("--backend cpu"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn issue_7_verify_names_the_missing_backend_and_profile() {
    let dir = tmp("refusals");
    let tiny = write(&dir, "tiny.yaml", TINY);
    let two = write(&dir, "two.yaml", TWO);
    let base = [
        "verify",
        "--model",
        &tiny,
        "--cluster",
        &two,
        "--dp",
        "2",
        "--global-batch",
        "4",
    ];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let o = planner(&args);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"));
        stderr(&o)
    };
    assert!(run(&[]).contains("--backend cuda"));
    assert!(run(&["--backend", "cpu"]).contains("--calibration"));
    // A GPU profile cannot price the cores.
    let err = run(&["--backend", "cpu", "--calibration", "a100-published"]);
    assert!(
        err.contains("`published` backend") && err.contains("--backend cpu"),
        "{err}"
    );
    let err = run(&["--backend", "cpu", "--steps", "0"]);
    assert!(err.contains("--steps"), "{err}");
}

/// An FP8 plan is refused (exit 2, naming the field and the fix) rather than run with 16-bit
/// GEMMs against a prediction that prices FP8.
#[test]
fn verify_refuses_fp8_plans() {
    let dir = tmp("fp8");
    let tiny = write(&dir, "tiny.yaml", TINY);
    let two = write(&dir, "two.yaml", TWO);
    let prof = write(&dir, "profile.json", FAKE_CPU_PROFILE);
    let o = planner(&[
        "verify",
        "--model",
        &tiny,
        "--cluster",
        &two,
        "--dp",
        "2",
        "--global-batch",
        "4",
        "--dtype",
        "fp8",
        "--backend",
        "cpu",
        "--calibration",
        &prof,
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`dtype` fp8")
            && err.contains("cannot run fp8 GEMMs")
            && err.contains("--dtype bf16"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn issue_7_cpu_refuses_plans_past_its_memory_limit() {
    let dir = tmp("limit");
    let prof = write(&dir, "profile.json", FAKE_CPU_PROFILE);
    let o = planner(&[
        "verify",
        "--model",
        "gpt3-175b",
        "--cluster",
        "a100x8",
        "--gpus",
        "2",
        "--tp",
        "2",
        "--global-batch",
        "2",
        "--backend",
        "cpu",
        "--calibration",
        &prof,
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--cpu-memory-gib") && err.contains("GiB"),
        "{err}"
    );
}

#[test]
fn issue_7_plan_files_verify_and_write_back_updates_the_profile() {
    let dir = tmp("writeback");
    let tiny = write(&dir, "tiny.yaml", TINY);
    let two = write(&dir, "two.yaml", TWO);
    let prof = write(&dir, "profile.json", FAKE_CPU_PROFILE);
    let plan = dir.join("plan.json").display().to_string();
    let o = planner(&[
        "estimate",
        "--model",
        &tiny,
        "--cluster",
        &two,
        "--pp",
        "2",
        "--global-batch",
        "4",
        "--save-plan",
        &plan,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = planner(&[
        "verify",
        "--model",
        &tiny,
        "--cluster",
        &two,
        "--plan",
        &plan,
        "--backend",
        "cpu",
        "--calibration",
        &prof,
        "--steps",
        "1",
        "--warmup",
        "0",
        "--write-back",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("step time") && text.contains("pp comm"),
        "{text}"
    );
    // The executed GEMM shapes and the pipeline transfer... of 64·64·2 bytes went back.
    let p: Value = serde_json::from_slice(&std::fs::read(&prof).unwrap()).unwrap();
    assert!(p["gemm"].as_array().unwrap().len() > 1, "{p}");
    assert!(
        p["meta"]["notes"]
            .as_str()
            .unwrap()
            .contains("planner verify"),
        "{p}"
    );
    assert!(
        p["collectives"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["source"] == "verify"),
        "{p}"
    );
}

#[test]
fn issue_7_suggest_verify_reranks_plans_by_measured_time() {
    let dir = tmp("suggest");
    let tiny = write(&dir, "tiny.yaml", TINY);
    let two = write(&dir, "two.yaml", TWO);
    let prof = write(&dir, "profile.json", FAKE_CPU_PROFILE);
    let o = planner(&[
        "suggest",
        "--model",
        &tiny,
        "--cluster",
        &two,
        "--global-batch",
        "4",
        "--verify",
        "3",
        "--backend",
        "cpu",
        "--calibration",
        &prof,
        "--steps",
        "1",
        "--warmup",
        "0",
        "--format",
        "json",
    ]);
    let v = json(&o);
    let plans = v["verified"].as_array().unwrap();
    assert_eq!(plans.len(), 3, "{v}");
    let measured: Vec<f64> = plans
        .iter()
        .map(|p| p["measured_step_time_s"].as_f64().unwrap())
        .collect();
    assert!(measured.windows(2).all(|w| w[0] <= w[1]), "{measured:?}");
    let mut predicted_ranks: Vec<u64> = plans
        .iter()
        .map(|p| p["predicted_rank"].as_u64().unwrap())
        .collect();
    predicted_ranks.sort();
    assert_eq!(predicted_ranks, vec![1, 2, 3]);
    assert!(v.get("spearman_rho").is_some(), "{v}");
}
