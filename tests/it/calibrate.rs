//! Calibration end to end: nccl-tests import and `show`, the cpu probes feeding `estimate`,
//! and the cuda backend's clear refusal where there is no GPU (issue 6).

use crate::cli::{planner, stderr, stdout};
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    super::cli::fresh_dir(&format!("calib-{name}"))
}

fn fixture_files() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("calibrate/fixtures/a100-nccl-tests");
    (2..=8)
        .map(|n| {
            dir.join(format!("a100-node-allreduce-{n}gpu.csv"))
                .display()
                .to_string()
        })
        .collect()
}

#[test]
fn issue_6_import_nccl_tests_then_show_prints_fits_and_residuals() {
    let out = tmp("a100");
    let mut args = vec!["calibrate", "import-nccl-tests"];
    let files = fixture_files();
    args.extend(files.iter().map(String::as_str));
    let o_s = out.display().to_string();
    args.extend(["--out", &o_s]);
    let o = planner(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("7 collective fits"), "{}", stdout(&o));
    let o = planner(&["calibrate", "show", &o_s]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    // One summary row per rank count, each with its worst residual at ≥ 1 MiB below 10%.
    for n in 2..=8 {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("| all_reduce | {n}     | intra")))
            .unwrap_or_else(|| panic!("no row for {n} ranks:\n{text}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let worst: f64 = cells[8].trim_end_matches('%').parse().unwrap();
        assert!(worst < 10.0, "{row}");
    }
    // 8 GPUs at 1 GiB: the file's 229.35 GB/s, within 5%.
    let row8 = text
        .lines()
        .find(|l| l.starts_with("| all_reduce | 8"))
        .unwrap();
    let busbw: f64 = row8
        .split('|')
        .map(str::trim)
        .nth(10)
        .unwrap()
        .parse()
        .unwrap();
    assert!((busbw / 229.35 - 1.0).abs() < 0.05, "{row8}");
}

#[test]
fn issue_6_import_without_ranks_names_the_flag() {
    let dir = tmp("noranks");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("all_reduce.txt");
    std::fs::write(&f, "#  size count type redop root time algbw busbw\n 1048576 262144 float sum -1 20.0 52.4 52.4\n").unwrap();
    let out = dir.join("p").display().to_string();
    let o = planner(&[
        "calibrate",
        "import-nccl-tests",
        &f.display().to_string(),
        "--out",
        &out,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--ranks N"), "{}", stderr(&o));
}

const TINY: &str =
    "name: tiny\narch: gpt\nlayers: 2\nhidden: 256\nheads: 4\nvocab: 1000\nseq_len: 128\n";

#[test]
fn issue_6_cpu_calibration_feeds_estimate() {
    let dir = tmp("cpu");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("tiny.yaml");
    std::fs::write(&model, TINY).unwrap();
    let model = model.display().to_string();
    let out = dir.join("cpu-prof").display().to_string();
    let o = planner(&[
        "calibrate",
        "--cluster",
        "a100x8",
        "--backend",
        "cpu",
        "--model",
        &model,
        // Room for the collectives after the GEMM and copy probes while other tests run
        // beside this one (3 s had cut them short on a busy 2-core machine).
        "--budget-s",
        "5",
        "--devices",
        "2",
        "--max-bytes",
        "262144",
        "--out",
        &out,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let profile: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cpu-prof/profile.json")).unwrap()).unwrap();
    assert_eq!(profile["meta"]["backend"], "cpu");
    assert!(profile["hbm_gbytes_s"].as_f64().unwrap() > 0.0);
    assert!(!profile["gemm"].as_array().unwrap().is_empty());
    let colls = profile["collectives"].as_array().unwrap();
    assert!(
        colls
            .iter()
            .any(|c| c["coll"] == "all_reduce" && c["ranks"] == 2),
        "{colls:?}"
    );
    let o = planner(&[
        "estimate",
        "--model",
        &model,
        "--cluster",
        "a100x8",
        "--gpus",
        "2",
        "--tp",
        "2",
        "--global-batch",
        "4",
        "--calibration",
        &out,
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let from: Vec<String> = v["numbers_from"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    // The model's own GEMM shapes at tp = 2, micro-batch 1 were probed: measured.
    let gemm = from.iter().find(|l| l.starts_with("gemm:")).unwrap();
    assert!(gemm.contains("measured"), "{from:?}");
    let comm = from
        .iter()
        .find(|l| l.starts_with("communication:"))
        .unwrap();
    assert!(
        comm.contains("measured") || comm.contains("interpolated"),
        "{from:?}"
    );
    // The table says it too.
    let o = planner(&[
        "estimate",
        "--model",
        &model,
        "--cluster",
        "a100x8",
        "--gpus",
        "2",
        "--tp",
        "2",
        "--global-batch",
        "4",
        "--calibration",
        &out,
    ]);
    assert!(stdout(&o).contains("numbers from: gemm:"), "{}", stdout(&o));
}

#[test]
fn issue_6_cuda_backend_without_gpu_exits_2() {
    if planner::exec::cuda::driver_present() {
        eprintln!("a CUDA driver is present: the no-GPU refusal cannot be checked here");
        return;
    }
    let out = tmp("cuda").display().to_string();
    let o = planner(&[
        "calibrate",
        "--cluster",
        "h100x8",
        "--backend",
        "cuda",
        "--out",
        &out,
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
fn issue_6_calibrate_needs_cluster_backend_and_out() {
    let o = planner(&["calibrate", "--backend", "cpu"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--cluster"), "{}", stderr(&o));
}

#[test]
fn calibrate_refuses_an_unwritable_out_before_probing() {
    // A folder under a regular file cannot be created; the probes would run the whole
    // budget first, so the refusal must name --out (the save error after probing did not).
    let dir = tmp("unwritable-out");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("profile-folder").display().to_string();
    let probe = |budget: &str, out: &str| {
        planner(&[
            "calibrate",
            "--cluster",
            "a100x8",
            "--backend",
            "cpu",
            "--budget-s",
            budget,
            "--out",
            out,
        ])
    };
    let o = probe("1", &out);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("--out") && err.contains("cannot write the profile there"),
        "{err}"
    );
    // A budget past what the probe clock holds had panicked.
    let o = probe("1e20", &out);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("at most 604800"), "{}", stderr(&o));
    // A budget too short for any probe leaves nothing to write: refused, not an empty profile.
    let empty = dir.join("empty").display().to_string();
    let o = probe("1e-300", &empty);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("before any probe finished"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("empty").join("profile.json").exists());
}

#[test]
fn issue_6_published_profiles_are_what_their_command_makes() {
    // calibrate/README.md: each published profile is regenerated from its sources.yaml; the
    // committed profile.json must be exactly what the command writes.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("calibrate");
    for name in ["a100-published", "h100-published"] {
        let out = tmp(name).join(name);
        let o_s = out.display().to_string();
        let src = root.join(name).join("sources.yaml").display().to_string();
        let o = planner(&["calibrate", "import-published", &src, "--out", &o_s]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let fresh: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("profile.json")).unwrap()).unwrap();
        let committed: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join(name).join("profile.json")).unwrap())
                .unwrap();
        // Sources are recorded with the path they were read from; compare the rest.
        let strip = |mut v: serde_json::Value| {
            for c in v["collectives"].as_array_mut().unwrap() {
                c["source"] = serde_json::Value::Null;
            }
            v
        };
        assert_eq!(
            strip(fresh.clone()),
            strip(committed),
            "{name}: regenerate it (calibrate/README.md)"
        );
        assert_eq!(fresh["meta"]["backend"], "published");
    }
}

#[test]
fn issue_6_published_a100_profile_prices_estimates_with_its_sources() {
    // llama3-8b, tp 2 on one A100 node: the TP all-reduce of 8192·4096·2 B = 64 MiB on 2
    // GPUs is a measured fixture size; the single MAMF GEMM point leaves GEMMs extrapolated.
    let o = planner(&[
        "estimate",
        "--model",
        "llama3-8b",
        "--cluster",
        "a100x8",
        "--tp",
        "2",
        "--global-batch",
        "64",
        "--calibration",
        "a100-published",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let from = v["numbers_from"].to_string();
    assert!(from.contains("gemm: 100% extrapolated"), "{from}");
    assert!(
        from.contains("communication:") && from.contains("measured"),
        "{from}"
    );
}

/// A profile's measured/preset ratio is carried to shapes it did not measure, but never past
/// the device's peak: one 256³ bf16 GEMM at 100 TFLOP/s on an A100 (1/3 of its peak, far
/// above the preset's rate for so small a shape) had priced GPT 1.7B at 227% MFU. A copy
/// bandwidth above the device's HBM is refused, naming it.
#[test]
fn profile_ratios_stop_at_the_device_peak() {
    let dir = tmp("peak-cap");
    std::fs::create_dir_all(&dir).unwrap();
    // 2 × 256³ = 33,554,432 FLOP in 3.3554432e-7 s: 100 TFLOP/s.
    let gemm = r#"{"name":"cap","meta":{"device":"NVIDIA A100-SXM4-80GB","backend":"cuda"},
        "gemm":[{"dtype":"bf16","m":256,"n":256,"k":256,"seconds":3.3554432e-7}]HBM}"#;
    let write = |name: &str, hbm: &str| {
        let p = dir.join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("profile.json"), gemm.replace("HBM", hbm)).unwrap();
        p.display().to_string()
    };
    let capped = write("cap", "");
    let o = planner(&[
        "estimate",
        "--model",
        "gpt-1.7b",
        "--cluster",
        "a100x8",
        "--calibration",
        &capped,
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let mfu = v["mfu"].as_f64().unwrap();
    assert!(mfu > 0.5 && mfu <= 1.05, "mfu {mfu}");
    let fast_copy = write("fast-copy", r#","hbm_gbytes_s":90000"#);
    let o = planner(&[
        "estimate",
        "--model",
        "gpt-1.7b",
        "--cluster",
        "a100x8",
        "--calibration",
        &fast_copy,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("hbm_gbytes_s 90000 is above"),
        "{}",
        stderr(&o)
    );
}
