//! `planner verify` end to end (issue 7): refusals with clear messages (no GPU, no cpu
//! profile, past the memory limit); `--plan` files, `--write-back`, `suggest --verify`. The
//! accuracy check (a small GPT under three plans on 2 thread-devices) times the cores, so it
//! runs in a test binary of its own: tests/cpu_accuracy.

use crate::cli::{planner, stderr, stdout};
use crate::common::{TWO, json};
use serde_json::Value;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    super::cli::fresh_dir(&format!("verify-{name}"))
}

use super::cli::write_in as write;

/// A 2-layer GPT that runs a step in milliseconds.
const TINY: &str =
    "name: tiny\narch: gpt\nlayers: 2\nhidden: 64\nheads: 2\nvocab: 256\nseq_len: 64\n";

/// A hand-written cpu profile (GEMMs at 10 GFLOP/s, 10 GB/s copies), for the tests that only
/// check plumbing.
const FAKE_CPU_PROFILE: &str = r#"{"name": "fake-cpu", "meta": {"device": "cpu", "backend": "cpu"},
  "gemm": [{"dtype": "bf16", "m": 64, "n": 64, "k": 64, "seconds": 5.24288e-5}],
  "hbm_gbytes_s": 10.0, "copies": [{"bytes": 1048576, "seconds": 0.0002097152}],
  "collectives": []}"#;

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
    // An FP8-capable device, so that the plan passes its checks and the cpu backend's own
    // refusal is what answers.
    let two = write(
        &dir,
        "two.yaml",
        &TWO.replace("a100-sxm4-80gb", "h100-sxm5-80gb"),
    );
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
    let verify = |extra: &[&str]| {
        let args = [
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
        ];
        let o = planner(&[&args[..], extra].concat());
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        stderr(&o)
    };
    let err = verify(&[]);
    assert!(
        err.contains("--cpu-memory-gib") && err.contains("GiB"),
        "{err}"
    );
    // A small limit is written in a unit that shows it: 0.0001 GiB = 107,374 B = 104.9 KiB
    // (it had read "the limit of 0.0 GiB").
    let err = verify(&["--cpu-memory-gib", "0.0001"]);
    assert!(err.contains("above the limit of 104.9 KiB"), "{err}");
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
    let o2 = planner(&[
        "estimate",
        "--model",
        &tiny,
        "--cluster",
        &two,
        "--plan",
        &plan,
        "--calibration",
        &prof,
    ]);
    assert!(
        stderr(&o2).contains("a stand-in that prices threads, not a100-sxm4-80gb GPUs"),
        "{}",
        stderr(&o2)
    );
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
    // A cpu profile is what --backend cpu asks for: no warning that it prices threads, not
    // the cluster's A100s (estimate, pricing the A100s with it, warns below).
    assert!(!stderr(&o).contains("stand-in"), "{}", stderr(&o));
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
    assert!(!stderr(&o).contains("stand-in"), "{}", stderr(&o));
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
