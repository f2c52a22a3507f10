//! The command line end to end: exit codes, messages that name the field, output formats.

pub use crate::common::{fresh_dir, planner, stderr, stdout, write_in};

/// Writes `text` to a file `name` in this process's shared test folder.
fn write_tmp(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("planner-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_in(&dir, name, text)
}

/// Asserts exit code 2 and that stderr mentions every `needle`.
fn bad_input(args: &[&str], needles: &[&str]) {
    let o = planner(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: expected `{n}` in:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn malformed_yaml_is_exit_2_with_file_name() {
    let p = write_tmp("broken.yaml", "name: x\narch: gpt\nlayers: [1, 2\n");
    bad_input(
        &["estimate", "--model", &p, "--cluster", "a100x8"],
        &["broken.yaml", "not valid YAML"],
    );
}

#[test]
fn unknown_key_suggests_the_closest() {
    let p = write_tmp(
        "typo.yaml",
        "name: x\narch: gpt\nlayers: 4\nhiden: 256\nheads: 4\nvocab: 1000\nseq_len: 128\n",
    );
    bad_input(
        &["estimate", "--model", &p, "--cluster", "a100x8"],
        &["`hiden`", "did you mean `hidden`", "`hidden`: missing"],
    );
}

#[test]
fn tp_not_dividing_heads_names_tp() {
    // gpt2-xl has 25 heads.
    bad_input(
        &[
            "estimate",
            "--model",
            "gpt2-xl",
            "--cluster",
            "a100x8",
            "--tp",
            "2",
            "--global-batch",
            "64",
        ],
        &["`tp`", "does not divide heads=25"],
    );
}

#[test]
fn gpu_count_mismatch_names_dp() {
    bad_input(
        &[
            "estimate",
            "--model",
            "gpt2-xl",
            "--cluster",
            "a100x8",
            "--dp",
            "4",
            "--global-batch",
            "64",
        ],
        &["`dp`", "cluster has 8 GPUs"],
    );
}

#[test]
fn global_batch_not_divisible_names_it() {
    bad_input(
        &[
            "estimate",
            "--model",
            "gpt2-xl",
            "--cluster",
            "a100x8",
            "--global-batch",
            "60",
            "--micro-batch",
            "2",
        ],
        &["`global_batch`", "not divisible by dp·mbs = 16"],
    );
}

#[test]
fn zero_and_absurd_sizes_are_rejected() {
    // 2^24 tokens × 1024 sequences: past 2^26 tokens per micro-batch the graph's counts had
    // wrapped around u64, and memory fell as the micro-batch grew.
    bad_input(
        &[
            "estimate",
            "--model",
            "llama3-8b",
            "--cluster",
            "h100x8",
            "--gpus",
            "1",
            "--seq-len",
            "16777216",
            "--attention",
            "unfused",
            "--micro-batch",
            "1024",
            "--global-batch",
            "1024",
        ],
        &["`micro_batch`", "tokens in one micro-batch"],
    );
    // Stage counts whose sum wraps around u64 to the layer count (2^64 − 1 + 33 = 32) had
    // passed the check and panicked laying the stages out.
    for stages in [
        "18446744073709551615,33",
        "9223372036854775808,9223372036854775840",
    ] {
        for cmd in [
            &["estimate"][..],
            &["simulate"],
            &["export", "--format", "megatron"],
        ] {
            let args = [
                "--model",
                "llama3-8b",
                "--cluster",
                "h100x8",
                "--pp",
                "2",
                "--dp",
                "4",
                "--global-batch",
                "8",
                "--stage-layers",
                stages,
            ];
            bad_input(&[cmd, &args[..]].concat(), &["stage layers"]);
        }
    }
    bad_input(
        &[
            "estimate",
            "--model",
            "gpt2-xl",
            "--cluster",
            "a100x8",
            "--micro-batch",
            "0",
        ],
        &["--micro-batch 0"],
    );
    bad_input(
        &[
            "estimate",
            "--model",
            "gpt2-xl",
            "--cluster",
            "a100x8",
            "--pp",
            "99999999999",
        ],
        &["--pp", "implausibly large"],
    );
    bad_input(
        &[
            "suggest",
            "--model",
            "gpt2-xl",
            "--cluster",
            "a100x8",
            "--memory-headroom",
            "60",
            "--global-batch",
            "0",
        ],
        &["--memory-headroom 60", "--global-batch 0"],
    );
    bad_input(
        &[
            "compare",
            "--model",
            "gpt2-xl",
            "--cluster",
            "a100x8",
            "--seq-len",
            "0",
        ],
        &["--seq-len 0"],
    );
    // gpt-1.7b has 2,048 learned positions: every search command refuses 3,000 (exit 2, not a
    // panic in compare's single-GPU baseline nor "no feasible plan").
    for cmd in ["suggest", "compare", "report"] {
        bad_input(
            &[
                cmd,
                "--model",
                "gpt-1.7b",
                "--cluster",
                "a100x8",
                "--seq-len",
                "3000",
            ],
            &["seq_len=3000", "2048 learned positions"],
        );
    }
    bad_input(
        &[
            "suggest",
            "--model",
            "gpt2-xl",
            "--cluster",
            "a100x8",
            "--global-batch",
            "99999999999999",
        ],
        &["--global-batch 99999999999999", "implausibly large"],
    );
    bad_input(
        &[
            "simulate",
            "--model",
            "gpt2-xl",
            "--cluster",
            "a100x8",
            "--pp",
            "8",
            "--global-batch",
            "16777216",
        ],
        &["16777216 micro-batches per step", "--micro-batch"],
    );
    bad_input(
        &[
            "suggest",
            "--model",
            "gpt2-xl",
            "--cluster",
            "a100x8",
            "--verify",
            "0",
            "--backend",
            "cpu",
        ],
        &["--verify 0"],
    );
    bad_input(
        &[
            "estimate",
            "--model",
            "gpt2-xl",
            "--cluster",
            "a100x8",
            "--save-plan",
            "/nonexistent-dir/p.json",
        ],
        &["--save-plan /nonexistent-dir/p.json", "cannot write"],
    );
    bad_input(
        &[
            "calibrate",
            "--cluster",
            "a100x8",
            "--backend",
            "cpu",
            "--devices",
            "0",
            "--out",
            "/tmp/planner-never-written",
        ],
        &["--devices 0"],
    );
    let p = write_tmp(
        "huge.yaml",
        "name: x\narch: gpt\nlayers: 4000000\nhidden: 0\nheads: 4\nvocab: 1000\nseq_len: 128\n",
    );
    bad_input(
        &["estimate", "--model", &p, "--cluster", "a100x8"],
        &["`layers`", "implausibly large", "`hidden`", "at least 1"],
    );
}

#[test]
fn unknown_preset_suggests_the_closest() {
    bad_input(
        &["suggest", "--model", "llama3-7b", "--cluster", "a100x8"],
        &["unknown model `llama3-7b`", "did you mean `llama3-"],
    );
    bad_input(
        &["suggest", "--model", "llama3-8b", "--cluster", "a100x16"],
        &["unknown cluster"],
    );
}

#[test]
fn missing_file_is_exit_2() {
    bad_input(
        &[
            "suggest",
            "--model",
            "/nonexistent/m.yaml",
            "--cluster",
            "a100x8",
        ],
        &["/nonexistent/m.yaml"],
    );
}

#[test]
fn nothing_fits_is_exit_1() {
    // Llama 3 405B cannot train on one A100: no plan fits.
    let o = planner(&[
        "suggest",
        "--model",
        "llama3-405b",
        "--cluster",
        "a100x8",
        "--gpus",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("out of memory"), "{}", stderr(&o));
    // The table prints nothing on stdout; JSON and CSV print their document with no plans
    // (a script reading stdout had got nothing to parse; QA), still exit 1.
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    let run = |cmd: &str, format: &str| {
        let o = planner(&[
            cmd,
            "--model",
            "llama3-405b",
            "--cluster",
            "a100x8",
            "--gpus",
            "1",
            "--format",
            format,
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).starts_with("error: no "), "{}", stderr(&o));
        stdout(&o)
    };
    let v: serde_json::Value = serde_json::from_str(&run("suggest", "json")).unwrap();
    assert_eq!(v["plans"], serde_json::json!([]));
    assert_eq!(v["simulated"], serde_json::json!([]));
    assert_eq!(v["sim_order_changed"], false);
    assert_eq!(v["model"], "llama3-405b");
    assert!(
        v["infeasible"]["out of memory"].as_u64().unwrap() > 0,
        "{v}"
    );
    let csv = run("suggest", "csv");
    assert_eq!(csv.lines().count(), 1, "{csv}");
    assert!(csv.starts_with("rank,dp,tp,pp,"), "{csv}");
    let v: serde_json::Value = serde_json::from_str(&run("compare", "json")).unwrap();
    let methods = v["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 4, "{v}");
    assert!(
        methods
            .iter()
            .all(|m| m["fits"] == false && m["why_none"].is_string()),
        "{v}"
    );
    let csv = run("compare", "csv");
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.contains(",no,")), "{csv}");
}

#[test]
fn estimate_json_has_the_contract_fields() {
    let o = planner(&[
        "estimate",
        "--model",
        "llama3-8b",
        "--cluster",
        "a100x8",
        "--tp",
        "2",
        "--pp",
        "2",
        "--micro-batch",
        "1",
        "--global-batch",
        "32",
        "--recompute",
        "selective",
        "--sequence-parallel",
        "--zero",
        "1",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in [
        "step_time_s",
        "tokens_per_s",
        "tflops_per_gpu",
        "mfu",
        "hfu",
        "memory_gib_per_gpu",
        "fits",
    ] {
        assert!(v[k].is_number() || v[k].is_boolean(), "{k} missing: {v}");
    }
    let b = &v["breakdown"];
    let parts = [
        "compute_s",
        "recompute_s",
        "tp_comm_s",
        "pp_comm_s",
        "dp_comm_s",
        "bubble_s",
        "optimizer_s",
    ];
    for k in parts {
        assert!(b[k].is_number(), "breakdown.{k} missing");
    }
    let sum: f64 = parts
        .iter()
        .chain(["other_comm_s"].iter())
        .map(|k| b[k].as_f64().unwrap())
        .sum();
    assert!(
        (sum - v["step_time_s"].as_f64().unwrap()).abs() < 1e-9 * sum,
        "breakdown sums to the step"
    );
    for k in ["weights", "grads", "optimizer", "activations", "other"] {
        assert!(v["memory_gib"][k].is_number(), "memory_gib.{k} missing");
    }
    // With --simulate and --ops the same contract holds, plus the simulation and the
    // operators, with the same step time (one estimate, not two).
    let mut args: Vec<&str> = vec![
        "estimate",
        "--model",
        "llama3-8b",
        "--cluster",
        "a100x8",
        "--tp",
        "2",
        "--pp",
        "2",
        "--micro-batch",
        "1",
        "--global-batch",
        "32",
        "--recompute",
        "selective",
        "--sequence-parallel",
        "--zero",
        "1",
        "--format",
        "json",
    ];
    args.extend(["--simulate", "--ops"]);
    let o = planner(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let w: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(w["step_time_s"], v["step_time_s"]);
    assert!(
        w["numbers_from"].is_array(),
        "numbers_from missing with --simulate"
    );
    assert!(w["sim"]["step_time_s"].is_number() && w["ops"].is_array());
}

/// Every CSV record has as many fields as the header (commas inside quotes do not split).
fn assert_same_columns(csv: &str) {
    let fields = |line: &str| {
        let mut quoted = false;
        1 + line
            .chars()
            .filter(|&c| {
                if c == '"' {
                    quoted = !quoted;
                }
                c == ',' && !quoted
            })
            .count()
    };
    let mut lines = csv.lines();
    let n = fields(lines.next().unwrap());
    for l in lines {
        assert_eq!(fields(l), n, "{l}");
    }
}

#[test]
fn suggest_formats() {
    let o = planner(&[
        "suggest",
        "--model",
        "gpt2-xl",
        "--cluster",
        "a100x8",
        "--top",
        "3",
        "--format",
        "csv",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.starts_with("rank,dp,tp,pp,"));
    assert_same_columns(&out);
    // gpt2-xl's 48 layers over pp = 8 with its head: uneven stages, a plan line with commas.
    let o = planner(&[
        "compare",
        "--model",
        "gpt2-xl",
        "--cluster",
        "a100x8",
        "--global-batch",
        "3",
        "--format",
        "csv",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("\"dp=1 tp=1 pp=8"), "{out}");
    assert_same_columns(&out);
    let o = planner(&[
        "suggest",
        "--model",
        "gpt2-xl",
        "--cluster",
        "a100x8",
        "--top",
        "2",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["plans"].as_array().unwrap().len(), 2);
    assert!(v["priced"].as_u64().unwrap() > 0);
    // 6% of an A100-80GB's 80 GiB kept free by default: 4.8 GiB.
    let h = v["memory_headroom_gib"].as_f64().unwrap();
    assert!((h - 4.8).abs() < 1e-9, "{h}");
}

#[test]
fn listings_show_every_preset() {
    let o = planner(&["models"]);
    let out = stdout(&o);
    for m in [
        "bert-large",
        "gpt3-175b",
        "gpt-1t",
        "llama3-405b",
        "mixtral-8x7b",
    ] {
        assert!(out.contains(m), "{m}");
    }
    let out = stdout(&planner(&["clusters"]));
    for c in ["a100x8", "a100-80g-x1024", "h100-x1024", "h200-sxm-141gb"] {
        assert!(out.contains(c), "{c}");
    }
}

/// Issue 2: every preset model on every preset cluster goes through the search without a
/// panic, and whatever it ranks first fits and prices to a positive, finite step time.
#[test]
fn every_preset_pair_runs_through_suggest() {
    use planner::search::{Space, default_global_batch, search};
    use planner::spec::{load_cluster, load_model, presets};
    for (m, _) in presets::MODELS {
        let model = load_model(m).unwrap();
        for (c, _) in presets::CLUSTERS {
            let cluster = load_cluster(c).unwrap();
            let gb = default_global_batch(model.seq_len, cluster.n_gpus());
            let r = search(&model, &cluster, None, &Space::new(gb, model.seq_len), 1);
            if let Some(best) = r.top.first() {
                assert!(best.fits, "{m} on {c}");
                assert!(
                    best.step_time_s.is_finite() && best.step_time_s > 0.0,
                    "{m} on {c}"
                );
            } else {
                // Nothing fits: the rejections say why.
                assert!(
                    r.infeasible.get("out of memory").copied().unwrap_or(0) > 0,
                    "{m} on {c}: {:?}",
                    r.infeasible
                );
            }
        }
    }
}

/// FP8 on a device without FP8 tensor cores (the A100) is bad input naming `dtype`, for one
/// plan and for the search alike; gradients reduced in FP8 name `grad_reduce_dtype`. (Before,
/// the A100 priced FP8 GEMMs at its bf16 rate with FP8 activations: a number no run has.)
#[test]
fn fp8_needs_an_fp8_device() {
    // llama3-8b at tp 2 on one node of `cluster`, then `extra`.
    let args = |cmd: &'static str, cluster: &'static str, extra: &[&'static str]| {
        let mut a = vec![cmd, "--model", "llama3-8b", "--cluster", cluster];
        if cmd == "estimate" {
            a.extend(["--tp", "2", "--global-batch", "64"]);
        }
        a.extend(extra);
        a
    };
    let fp8 = ["--dtype", "fp8"];
    bad_input(
        &args("estimate", "a100x8", &fp8),
        &[
            "`dtype`",
            "a100-sxm4-80gb",
            "no fp8 tensor cores",
            "use dtype bf16",
        ],
    );
    bad_input(
        &args("suggest", "a100x8", &fp8),
        &[
            "--dtype fp8",
            "a100-sxm4-80gb has no FP8 tensor cores",
            "--dtype bf16",
        ],
    );
    bad_input(
        &args("estimate", "h100x8", &["--grad-reduce-dtype", "fp8"]),
        &["`grad_reduce_dtype`", "use fp32 or bf16"],
    );
    let o = planner(&args("estimate", "h100x8", &fp8));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// Search flags out of range say so: no plans to print, a negative headroom (read as a
/// number, not as an unknown flag), and vpp without the interleaved schedule names the fix.
#[test]
fn search_flags_out_of_range_name_the_fix() {
    let s = ["suggest", "--model", "gpt-1.7b", "--cluster", "a100x8"];
    bad_input(
        &[&s[..], &["--top", "0"]].concat(),
        &["--top 0", "at least 1"],
    );
    bad_input(
        &[&s[..], &["--memory-headroom", "-1"]].concat(),
        &["--memory-headroom -1", "from 0 to below 50"],
    );
    let est = |extra: &[&'static str]| {
        let base = [
            "estimate",
            "--model",
            "gpt-1.7b",
            "--cluster",
            "a100x8",
            "--global-batch",
            "64",
        ];
        [&base[..], extra].concat()
    };
    for (extra, fix) in [
        (
            &["--pp", "2", "--vpp", "2", "--schedule", "1f1b"][..],
            "use --schedule interleaved",
        ),
        (
            &["--pp", "2", "--schedule", "interleaved"][..],
            "set vpp ≥ 2, or use --schedule 1f1b",
        ),
    ] {
        bad_input(&est(extra), &["`vpp`", fix]);
    }
}

/// A GPU profile of another device than the cluster's is bad input naming both (an H100
/// profile had priced A100s at 113.6% MFU); the H200 node, whose profile it partly is, and the
/// cluster's own family pass; closed pipes and full disks end the output cleanly.
#[test]
fn calibration_of_another_gpu_and_output_errors() {
    let est = |cluster: &'static str, prof: &'static str| {
        planner(&[
            "estimate",
            "--model",
            "gpt-1.7b",
            "--cluster",
            cluster,
            "--global-batch",
            "64",
            "--calibration",
            prof,
        ])
    };
    let o = est("a100x8", "h100-published");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for needle in [
        "calibration `h100-published`",
        "a100-sxm4-80gb",
        "calibrate on the cluster's GPUs",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    for (cluster, prof) in [
        ("h100x8", "h100-published"),
        ("h200x8", "h100-published"),
        ("a100x8", "a100-published"),
    ] {
        let o = est(cluster, prof);
        assert_eq!(o.status.code(), Some(0), "{cluster} {prof}: {}", stderr(&o));
    }
    // Output that cannot be written (a full device) is an error, not a panic (exit 101).
    if let Ok(full) = std::fs::File::create("/dev/full") {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_planner"))
            .arg("models")
            .stdout(full)
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("cannot write the output") && !err.contains("panicked"),
            "{err}"
        );
    }
}

/// Counts and paths that cannot work say so with exit 2: no timed runs, no micro-batch to
/// probe, a report directory that is a device; a simulated plan beyond the device is marked
/// out of memory as estimate marks it.
#[test]
fn more_flags_out_of_range_name_the_fix() {
    bad_input(&["bench", "--iters", "0"], &["--iters 0", "1 to 10000"]);
    // Unbounded, 2^32 − 1 runs had aborted allocating their times (QA).
    bad_input(
        &["bench", "--iters", "4294967295"],
        &["--iters 4294967295", "1 to 10000"],
    );
    // Refused, not capped silently at 100; and the cpu stand-in's memory named as the flag.
    for (flag, value, needle) in [
        ("--warmup", "1000000000", "0 to 100 untimed steps"),
        (
            "--cpu-memory-gib",
            "1e30",
            "--cpu-memory-gib 1000000000000000000000000000000",
        ),
    ] {
        bad_input(
            &[
                "verify",
                "--backend",
                "cpu",
                "--model",
                "gpt2-xl",
                "--cluster",
                "a100x8",
                "--gpus",
                "2",
                "--calibration",
                "a100-published",
                flag,
                value,
            ],
            &[needle],
        );
    }
    // A trace of 16.8 M passes had run out of memory building its JSON (QA).
    bad_input(
        &[
            "simulate",
            "--model",
            "gpt-1t",
            "--cluster",
            "h100-x1024",
            "--pp",
            "128",
            "--dp",
            "8",
            "--global-batch",
            "524288",
            "--trace",
            "/dev/null",
        ],
        &["--trace", "--global-batch"],
    );
    // 2,049 layers: past twice the deepest published Transformer (a report on 10,000 had
    // not finished in 10 minutes).
    let deep = write_tmp(
        "deep.yaml",
        "name: deep\narch: gpt\nlayers: 2049\nhidden: 64\nheads: 4\nvocab: 100\nseq_len: 32\n",
    );
    bad_input(
        &["estimate", "--model", &deep, "--cluster", "h100x8"],
        &["`layers`", "2048"],
    );
    // A model name with a newline (it names report folders and heads reports).
    let model = write_tmp(
        "newline-name.yaml",
        "name: \"a\\nb\"\narch: gpt\nlayers: 2\nhidden: 64\nheads: 4\nvocab: 100\nseq_len: 32\n",
    );
    bad_input(
        &["estimate", "--model", &model, "--cluster", "h100x8"],
        &["`name`", "control characters"],
    );
    // FSDP frameworks have no ZeRO-1 (suggest never searched it; estimate priced it).
    bad_input(
        &[
            "estimate",
            "--model",
            "llama3-8b",
            "--cluster",
            "h100x8",
            "--zero",
            "1",
            "--framework",
            "torchtitan",
            "--global-batch",
            "64",
        ],
        &["`zero`", "torchtitan runs ZeRO stages 0, 2, 3"],
    );
    bad_input(
        &[
            "calibrate",
            "--cluster",
            "a100x8",
            "--backend",
            "cpu",
            "--max-mbs",
            "0",
            "--out",
            "/tmp/planner-never",
        ],
        &["--max-mbs 0", "at least 1"],
    );
    bad_input(
        &[
            "report",
            "--model",
            "gpt2-xl",
            "--cluster",
            "a100x8",
            "--gpus",
            "1",
            "--out",
            "/dev/null",
        ],
        &["--out: /dev/null", "give a writable directory"],
    );
    let gpipe = |extra: &[&str]| {
        let args = [
            "simulate",
            "--model",
            "llama3-8b",
            "--cluster",
            "h100x8",
            "--global-batch",
            "64",
            "--schedule",
            "gpipe",
        ];
        planner(&[&args[..], extra].concat())
    };
    let o = gpipe(&["--pp", "2", "--framework", "torchtitan", "--zero", "3"]);
    assert!(stdout(&o).contains("OUT OF MEMORY"), "{}", stdout(&o));
    // GPipe exists in torchtitan only, and needs a pipeline: on one stage it had been priced
    // holding every micro-batch, which gradient accumulation never does.
    for (extra, said) in [
        (&["--pp", "2"][..], "megatron has no GPipe schedule"),
        (
            &["--framework", "torchtitan"][..],
            "schedule=gpipe with pp=1",
        ),
    ] {
        let o = gpipe(extra);
        assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
        assert!(stderr(&o).contains(said), "{}", stderr(&o));
    }
}

/// Every row `suggest` prints re-prices to its own step time with `estimate`, given the flags
/// its header prints and the row's own cells — per-stage layer and recomputation counts
/// included, in the folded form the table prints and plan labels use (`12×2,8`). The header had left out the
/// global batch, whose defaults differ between the two commands (2× on a Llama 3 70B row),
/// and per-stage recomputation and folded counts could not be given to `estimate`.
#[test]
fn suggest_rows_reprice_from_what_suggest_prints() {
    reprice_suggested(
        &["--model", "llama3-8b", "--cluster", "h100x8", "--gpus", "3"],
        true,
    );
    // Interleaved rows print no stage counts (`-`): an even split of v chunks per stage is
    // no `--stage-layers` (whole stages), which `estimate` had refused when given it.
    reprice_suggested(
        &[
            "--model",
            "llama3-70b",
            "--cluster",
            "h100-x1024",
            "--gpus",
            "64",
        ],
        false,
    );
}

/// An MoE model's rows re-price too, whole experts (`etp` 1) among them: Grok-1 as NVIDIA's
/// DGX Cloud recipe trains it, on 512 H100s (4 M-token batches, 512 sequences; the recipe
/// runs 1024), where the search ranks whole-expert layouts
/// first (their expert all-to-all stays inside a node) and finds the recipe's own (tp 4,
/// pp 8, cp 2, ep 8, etp 1, vpp 8) among the top five layouts.
#[test]
fn suggest_rows_with_whole_experts_reprice() {
    let model = format!(
        "{}/tests/data/models/grok1-dgxc.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let common = [
        "--model",
        model.as_str(),
        "--cluster",
        "h100-x1024",
        "--gpus",
        "512",
    ];
    reprice_suggested(&common, false);
    let out = planner(
        &[
            &["suggest"],
            &common[..],
            &["--top", "10", "--format", "csv"],
        ]
        .concat(),
    );
    let text = stdout(&out);
    // dp, tp, pp, cp, ep, etp, vpp, mbs of each ranked row, each layout once (its
    // recomputation and ZeRO variants rank beside it).
    let mut layouts: Vec<Vec<&str>> = Vec::new();
    for l in text.lines().skip(1) {
        let layout: Vec<&str> = l.split(',').skip(1).take(8).collect();
        if !layouts.contains(&layout) {
            layouts.push(layout);
        }
    }
    assert!(
        layouts
            .iter()
            .take(5)
            .any(|l| l == &["8", "4", "8", "2", "8", "1", "8", "1"]),
        "the recipe's layout in the top five:\n{text}"
    );
    assert_eq!(layouts[0][5], "1", "whole experts first:\n{text}");
}

fn reprice_suggested(common: &[&str], expect_folded: bool) {
    let out = planner(&[&["suggest"], common, &["--top", "10"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let flags: Vec<&str> = text
        .split("priced with ")
        .nth(1)
        .and_then(|t| t.split(" (give").next())
        .expect("header flags")
        .split_whitespace()
        .collect();
    // The ranked table: the first run of table lines.
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'));
    let header: Vec<String> = cells(lines.next().unwrap());
    let col =
        |row: &[String], name: &str| row[header.iter().position(|h| h == name).unwrap()].clone();
    let mut folded = false;
    for line in lines.skip(1) {
        let row = cells(line);
        let mut args: Vec<String> = ["estimate"]
            .iter()
            .chain(common)
            .map(|s| s.to_string())
            .collect();
        args.extend(flags.iter().map(|s| s.to_string()));
        for (flag, name) in [
            ("--dp", "dp"),
            ("--tp", "tp"),
            ("--pp", "pp"),
            ("--cp", "cp"),
            ("--ep", "ep"),
            ("--vpp", "vpp"),
            ("--micro-batch", "mbs"),
            ("--zero", "zero"),
        ] {
            args.extend([flag.to_string(), col(&row, name)]);
        }
        // `selective(M)` is `--recompute selective --recompute-modules M`, as the header says.
        let rc = col(&row, "recompute");
        match rc
            .strip_prefix("selective(")
            .and_then(|m| m.strip_suffix(')'))
        {
            Some(m) => args
                .extend(["--recompute", "selective", "--recompute-modules", m].map(String::from)),
            None => args.extend(["--recompute".to_string(), rc]),
        }
        if col(&row, "sp") == "yes" {
            args.push("--sequence-parallel".into());
        }
        if col(&row, "etp") != "-" {
            args.extend(["--etp".into(), col(&row, "etp")]);
        }
        let (stages, recompute) = (col(&row, "stage_layers"), col(&row, "recompute_layers"));
        folded |= stages.contains('×') || recompute.contains('×');
        let interleaved = col(&row, "vpp") != "1";
        assert_eq!(stages == "-", interleaved, "{line}");
        if col(&row, "pp") != "1" && !interleaved {
            args.extend(["--stage-layers".into(), stages]);
        }
        if recompute != "-" && col(&row, "pp") != "1" {
            args.extend(["--recompute-layers".into(), recompute]);
        } else if recompute != "-" {
            args.extend(["--recompute-num-layers".into(), recompute]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = planner(&refs);
        assert_eq!(o.status.code(), Some(0), "{line}\n{}", stderr(&o));
        let priced = stdout(&o);
        let step = priced
            .lines()
            .find(|l| l.starts_with("| step time"))
            .and_then(|l| l.split('|').nth(2))
            .unwrap()
            .trim()
            .trim_end_matches(" s")
            .to_string();
        assert_eq!(
            format!("{:.3}", step.parse::<f64>().unwrap()),
            col(&row, "step_time_s"),
            "{line}"
        );
    }
    assert!(
        folded || !expect_folded,
        "no row with folded counts:\n{text}"
    );
}

fn cells(line: &str) -> Vec<String> {
    line.trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

#[test]
fn flags_that_would_do_nothing_are_refused() {
    // suggest's run flags act only on the plans --verify runs; estimate's operator list
    // has no CSV form. Both had been accepted and silently ignored.
    bad_input(
        &[
            "suggest",
            "--model",
            "gpt-1.7b",
            "--cluster",
            "a100x8",
            "--backend",
            "cpu",
            "--steps",
            "5",
        ],
        &["--backend, --steps", "--verify K"],
    );
    bad_input(
        &[
            "estimate",
            "--model",
            "gpt-1.7b",
            "--cluster",
            "a100x8",
            "--ops",
            "--format",
            "csv",
        ],
        &["--ops with --format csv", "json or table"],
    );
    // suggest's export had returned before --verify ran, and --explain was dropped from CSV.
    bad_input(
        &[
            "suggest",
            "--model",
            "gpt-1.7b",
            "--cluster",
            "a100x8",
            "--export",
            "megatron",
            "--verify",
            "2",
            "--backend",
            "cpu",
        ],
        &["'--export <EXPORT>' cannot be used with '--verify <K>'"],
    );
    bad_input(
        &[
            "suggest",
            "--model",
            "gpt-1.7b",
            "--cluster",
            "a100x8",
            "--explain",
            "--format",
            "csv",
        ],
        &["--explain with --format csv"],
    );
}

/// `compare`'s step times carry four significant digits, so the speedup printed beside each
/// is its own quotient: BERT-large on 1,024 A100s steps in 0.06136 s against one GPU's
/// 54.612 s, 890× (three decimals had printed 0.061, from which 54.612 / 0.061 = 895).
#[test]
fn compare_speedups_follow_from_the_printed_times() {
    let o = planner(&[
        "compare",
        "--model",
        "bert-large",
        "--cluster",
        "a100-80g-x1024",
        "--gpus",
        "1024",
        "--global-batch",
        "8192",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    let single: f64 = text
        .split("one GPU: ")
        .nth(1)
        .and_then(|t| t.split(" s per step").next())
        .and_then(|t| t.parse().ok())
        .expect("single-GPU time");
    let mut rows = 0;
    for line in text
        .lines()
        .filter(|l| l.starts_with("| dp-only") || l.starts_with("| hybrid"))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (t, speedup): (f64, f64) = (cells[3].parse().unwrap(), cells[4].parse().unwrap());
        assert!(
            (single / t / speedup - 1.0).abs() < 1e-3,
            "{line}: {single} / {t} vs {speedup}"
        );
        rows += 1;
    }
    assert_eq!(rows, 2, "{text}");
}

/// A mixture of experts' header counts its active parameters both ways model cards do: with
/// the input embedding (Mixtral's 12.9 B) and without (gpt-oss-20b's card: 3.61 B; its
/// 201,088 × 2,880 = 579,133,440 embedding parameters make the 4.19 B with it).
#[test]
fn active_parameters_are_counted_with_and_without_the_input_embedding() {
    let o = planner(&[
        "estimate",
        "--model",
        "tests/data/hf/gpt-oss-20b.json",
        "--cluster",
        "h200x8",
        "--gpus",
        "1",
        "--global-batch",
        "1",
        "--seq-len",
        "1024",
    ]);
    assert!(
        stdout(&o).contains("(20.91B params, 4.19B active, 3.61B without the input embedding)"),
        "{}",
        stdout(&o)
    );
}

/// A value refused in a file gets that one problem: a device file's bad efficiency is
/// reported as the device file's field (it had come nested in the cluster's `gpu` problem,
/// with a fix to name a preset), and a refused `ffn_hidden: 0` no longer adds "llama models
/// need an explicit MLP size".
#[test]
fn a_refused_value_is_one_problem_in_its_own_file() {
    let device = std::fs::read_to_string("hardware/gpus/a100-sxm4-80gb.yaml")
        .unwrap()
        .replace("gemm: 0.76", "gemm: 0");
    assert!(device.contains("gemm: 0\n"));
    let d = write_tmp("bad-device.yaml", &device);
    let c = write_tmp(
        "bad-device-cluster.yaml",
        &format!(
            "name: c\ngpu: {d}\nnodes: 1\ngpus_per_node: 8\n\
             intra_node: {{fabric: nvswitch, bw_gbytes_s: 300, latency_us: 3}}\n"
        ),
    );
    let o = planner(&["estimate", "--model", "llama3-8b", "--cluster", &c]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("1 problem found:\n  - "), "{err}");
    assert!(
        err.contains("bad-device.yaml: `efficiency.gemm`: expected an efficiency"),
        "{err}"
    );
    assert!(!err.contains("name a device preset"), "{err}");
    let model = std::fs::read_to_string("models/llama3-8b.yaml")
        .unwrap()
        .replace("ffn_hidden: 14336", "ffn_hidden: 0");
    let m = write_tmp("ffn0.yaml", &model);
    let o = planner(&["estimate", "--model", &m, "--cluster", "a100x8"]);
    let err = stderr(&o);
    assert!(
        err.contains("1 problem found") && err.contains("`ffn_hidden`: must be at least 1"),
        "{err}"
    );
    assert!(!err.contains("explicit MLP size"), "{err}");
}

/// FP8 weights in CSV: the `zero` cell stays a number and `fp8_param_gather` is a column of
/// its own (tables print `1+fp8`; CSV had carried that text in a numeric column).
#[test]
fn csv_keeps_zero_a_number_beside_fp8_weights() {
    let args = [
        "suggest",
        "--model",
        "llama3-8b",
        "--cluster",
        "h100x8",
        "--dtype",
        "fp8",
        "--top",
        "1",
    ];
    let o = planner(&[&args[..], &["--format", "csv"]].concat());
    let out = stdout(&o);
    let mut lines = out.lines();
    let header = csv_fields(lines.next().unwrap());
    let row = csv_fields(lines.next().unwrap());
    // `zero` comes before any quoted cell; `fp8_param_gather` and `priced_with` come before
    // `numbers_from`, the last.
    let zero = header.iter().position(|h| h == "zero").unwrap();
    assert_eq!(row[zero], "1", "{out}");
    assert_eq!(header[header.len() - 3], "fp8_param_gather");
    assert_eq!(row[row.len() - 3], "true", "{out}");
    // The flags the columns do not show: two searches priced differently (here FP8 under
    // current scaling against delayed) no longer give the same CSV.
    assert_eq!(header[header.len() - 2], "priced_with");
    let flags = &row[row.len() - 2];
    assert!(
        flags.contains("--dtype fp8") && !flags.contains("--fp8-recipe"),
        "{out}"
    );
    let cs = stdout(&planner(
        &[
            &args[..],
            &["--fp8-recipe", "tensorwise", "--format", "csv"],
        ]
        .concat(),
    ));
    let cs_row = csv_fields(cs.lines().nth(1).unwrap());
    assert!(
        cs_row[cs_row.len() - 2].contains("--dtype fp8 ")
            && cs_row[cs_row.len() - 2].contains("--fp8-recipe tensorwise"),
        "{cs}"
    );
    let table = stdout(&planner(&args));
    assert!(table.contains("| 1+fp8 "), "{table}");
    assert!(
        table.contains("zero 1+fp8 is --zero 1 --fp8-param-gather"),
        "{table}"
    );
    // The mfu column of an FP8 search is of the H100's dense FP8 peak, 1979 TFLOP/s (QA
    // round 7: it had switched from bf16's 989 unsaid).
    assert!(
        table.contains("mfu is of the dense fp8 peak, 1979 TFLOP/s"),
        "{table}"
    );
}

/// An FP8 Megatron estimate with Transformer Engine's weight copy says so and names the flag
/// that drops it; with FP8 weights the line is gone.
#[test]
fn fp8_estimates_name_the_weight_copy_and_its_remedy() {
    let base = [
        "estimate",
        "--model",
        "llama3-8b",
        "--cluster",
        "h100x8",
        "--global-batch",
        "64",
        "--dtype",
        "fp8",
    ];
    let copy = stdout(&planner(&base));
    assert!(
        copy.contains("FP8 copy of each linear weight and its transpose")
            && copy.contains("with --zero 1 --fp8-param-gather"),
        "{copy}"
    );
    let fp8 = stdout(&planner(
        &[&base[..], &["--zero", "1", "--fp8-param-gather"]].concat(),
    ));
    assert!(!fp8.contains("FP8 copy"), "{fp8}");
}

/// A device file passed as `--cluster` is one problem that says what the file is and how a
/// cluster names it (it had listed four missing cluster fields and six unknown keys).
#[test]
fn a_device_file_as_the_cluster_says_what_it_is() {
    let o = planner(&[
        "estimate",
        "--model",
        "gpt3-175b",
        "--cluster",
        "hardware/gpus/h100-sxm5-80gb.yaml",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "error: 1 problem found:\n  - hardware/gpus/h100-sxm5-80gb.yaml: `(document)`: this is \
         a GPU device file (memory_gib, hbm_gbytes_s, peak_tflops), not a cluster: a cluster \
         file names it as `gpu: h100-sxm5-80gb` beside `name`, `nodes`, `gpus_per_node` and \
         `intra_node` (fix: pass a cluster preset with this GPU (h100x8, h100-x1024; `planner \
         clusters` lists them all), or a cluster file that names it)\n"
    );
}

/// A negative number given to a numeric flag is that flag's value, refused by what the flag
/// takes (exit 2); clap had read `-1` as an unknown argument ("unexpected argument '-1'").
#[test]
fn negative_numbers_are_refused_by_the_flag_they_were_given_to() {
    let first_line = |args: &[&str]| {
        let o = planner(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        err.lines().next().unwrap().to_string()
    };
    let est = ["estimate", "--model", "gpt3-175b", "--cluster", "a100x8"];
    let cases: [(&[&str], &str); 9] = [
        (
            &["--zero", "-1"],
            "error: invalid value '-1' for '--zero <ZERO>': expected a ZeRO stage: 0, 1, 2 or 3 \
             (1 = distributed optimizer)",
        ),
        (
            &["--tp", "-2"],
            "error: invalid value '-2' for '--tp <TP>': a negative number; give a whole number, \
             at least 1",
        ),
        (
            &["--micro-batch", "1.5"],
            "error: invalid value '1.5' for '--micro-batch <MICRO_BATCH>': expected a whole \
             number, at least 1",
        ),
        (
            &["--recompute", "full", "--recompute-num-layers", "-3"],
            "error: invalid value '-3' for '--recompute-num-layers <RECOMPUTE_NUM_LAYERS>': a \
             negative number; give a whole number, 0 or more",
        ),
        (
            &["--stage-layers", "-1"],
            "error: invalid value '-1' for '--stage-layers <STAGE_LAYERS>': `-1` is not a count \
             or a run N×k (e.g. 5,3×6,1)",
        ),
        (
            &["--gpus", "-8"],
            "error: invalid value '-8' for '--gpus <GPUS>': a negative number; give a whole \
             number, at least 1",
        ),
        // A list that starts with a negative number reaches the flag's parser too (clap took
        // `-1,2` for an unknown short flag), and a flag after a list stays a flag.
        (
            &["--pp", "2", "--stage-layers", "-1,2"],
            "error: invalid value '-1,2' for '--stage-layers <STAGE_LAYERS>': `-1` is not a \
             count or a run N×k (e.g. 5,3×6,1)",
        ),
        (
            &[
                "--pp",
                "2",
                "--recompute",
                "full",
                "--recompute-layers",
                "-2,2",
                "--tp",
                "4",
            ],
            "error: invalid value '-2,2' for '--recompute-layers <RECOMPUTE_LAYERS>': `-2` is \
             not a count or a run N×k (e.g. 5,3×6,1)",
        ),
        // 0 still reaches the flag's own check.
        (&["--tp", "0"], "error: --tp 0: must be at least 1"),
    ];
    for (extra, want) in cases {
        assert_eq!(first_line(&[&est[..], extra].concat()), want, "{extra:?}");
    }
    assert_eq!(
        first_line(&[
            "report",
            "--model",
            "gpt3-175b",
            "--cluster",
            "a100x8",
            "--tokens",
            "-1"
        ]),
        "error: --tokens -1: give the training tokens, 1e6 to 1e16, e.g. 300e9"
    );
    assert_eq!(
        first_line(&[
            "report",
            "--model",
            "gpt3-175b",
            "--cluster",
            "a100x8",
            "--gpus",
            "-8,16"
        ]),
        "error: --gpus `-8,16`: `-8` is not a GPU count; write counts like `1,2,4,8` or \
         `8,16,...,4096`"
    );
    assert_eq!(
        first_line(&[
            "verify",
            "--model",
            "gpt3-175b",
            "--cluster",
            "a100x8",
            "--warmup",
            "-1"
        ]),
        "error: invalid value '-1' for '--warmup <WARMUP>': a negative number; give a whole \
         number, 0 or more"
    );
    assert_eq!(
        first_line(&["bench", "--iters", "5000000000"]),
        "error: invalid value '5000000000' for '--iters <ITERS>': too large for this flag; give \
         a whole number, at least 1"
    );
}

/// A plan file's refused knob names its field once: the reason had repeated it
/// ("`fp8_param_gather`: fp8_param_gather: Megatron-LM keeps …").
#[test]
fn a_refused_plan_field_is_named_once() {
    let refusal = |name: &str, extra: &str| {
        let plan = write_tmp(
            name,
            &format!(
                "{{\"dp\": 2, \"tp\": 2, \"pp\": 2, \"mbs\": 1, \"global_batch\": 64, \
                 \"seq_len\": 2048, {extra}}}"
            ),
        );
        let o = planner(&[
            "estimate",
            "--model",
            "gpt-1.7b",
            "--cluster",
            "a100x8",
            "--plan",
            &plan,
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        stderr(&o)
    };
    assert_eq!(
        refusal("fp8-gather.json", "\"fp8_param_gather\": true"),
        "error: the plan cannot run gpt-1.7b on a100x8 (8 GPUs):\n  - plan: `fp8_param_gather`: \
         Megatron-LM keeps FP8 weights and gathers them in FP8 (--fp8-param-gather) only under \
         FP8 training; use --dtype fp8, or drop it\n"
    );
    assert_eq!(
        refusal(
            "p2p-deepspeed.json",
            "\"framework\": \"deepspeed\", \"p2p_scatter_gather\": true"
        ),
        "error: the plan cannot run gpt-1.7b on a100x8 (8 GPUs):\n  - plan: \
         `p2p_scatter_gather`: splitting pipeline sends over the TP ranks is Megatron-LM's \
         option (--scatter-gather-tensors-in-pipeline), not deepspeed's; drop \
         --p2p-scatter-gather\n"
    );
    // (torchtitan refuses this pp 2, zero 0 plan on two more counts, listed after it.)
    assert!(
        refusal(
            "vocab-torchtitan.json",
            "\"framework\": \"torchtitan\", \"make_vocab_size_divisible_by\": 64"
        )
        .contains(
            "\n  - plan: `make_vocab_size_divisible_by`: --make-vocab-size-divisible-by 64: \
             padding the vocabulary is Megatron-LM's and Megatron-DeepSpeed's \
             (_vocab_size_with_padding); torchtitan builds the embedding and output layer at \
             the vocabulary's own size; drop the flag\n"
        )
    );
}

/// Two messages the QA pass found wanting: a default global batch that a tiny --seq-len makes
/// implausible names the flag the user gave (not --global-batch, which they did not), and
/// `suggest --export` with --format json (which it had silently ignored, printing TOML) says
/// the two do not combine. Both exit 2.
#[test]
fn derived_batches_and_ignored_formats_say_so() {
    let o = planner(&[
        "estimate",
        "--model",
        "llama3-8b",
        "--cluster",
        "h100x8",
        "--seq-len",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim_end(),
        "error: --seq-len 1: the default global batch, 4,194,304 tokens per step, is 4194304 \
         sequences, 524288 micro-batches per step on dp 8 (limit 65536); give --global-batch \
         (sequences per step) or a longer --seq-len"
    );
    let o = planner(&[
        "suggest",
        "--model",
        "llama3-8b",
        "--cluster",
        "h100x8",
        "--export",
        "torchtitan",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim_end(),
        "error: --format json with --export torchtitan: the export prints the launch \
         configuration in that framework's own format; drop --format, or drop --export for the \
         ranked plans as json"
    );
}

/// `estimate` of Llama 3 8B at tp 2 on h100x8 (64 sequences, micro-batch 1) in JSON.
const LLAMA_TP2: [&str; 13] = [
    "estimate",
    "--model",
    "llama3-8b",
    "--cluster",
    "h100x8",
    "--tp",
    "2",
    "--micro-batch",
    "1",
    "--global-batch",
    "64",
    "--format",
    "json",
];

/// [`LLAMA_TP2`] with `extra` flags, which must succeed: its JSON.
fn estimate_json(extra: &[&str]) -> serde_json::Value {
    let o = planner(&[&LLAMA_TP2[..], extra].concat());
    assert_eq!(o.status.code(), Some(0), "{extra:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `--fp8-recipe tensorwise` prices current scaling's amax passes (a slower step than
/// delayed scaling's, nothing else changed), is saved in a plan file and read back at the
/// same price, and is refused beside a 16-bit plan, on `estimate` (naming the plan field)
/// and on `suggest` (naming the flag).
#[test]
fn fp8_recipe_is_priced_saved_and_refused_without_fp8() {
    let dir = fresh_dir("fp8-recipe");
    let saved = dir.join("cs.json");
    let saved = saved.to_str().unwrap();
    let base = LLAMA_TP2;
    let step = |extra: &[&str]| estimate_json(extra)["step_time_s"].as_f64().unwrap();
    let delayed = step(&["--dtype", "fp8"]);
    let current = step(&[
        "--dtype",
        "fp8",
        "--fp8-recipe",
        "tensorwise",
        "--save-plan",
        saved,
    ]);
    assert!(current > delayed, "{current} vs {delayed}");
    let text = std::fs::read_to_string(saved).unwrap();
    assert!(text.contains("\"fp8_recipe\": \"tensorwise\""), "{text}");
    let o = planner(&[
        "estimate",
        "--model",
        "llama3-8b",
        "--cluster",
        "h100x8",
        "--plan",
        saved,
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["step_time_s"].as_f64().unwrap(), current);
    bad_input(
        &[&base[..], &["--fp8-recipe", "tensorwise"]].concat(),
        &["`fp8_recipe`", "the plan computes in bf16", "--dtype fp8"],
    );
    bad_input(
        &[
            "suggest",
            "--model",
            "llama3-8b",
            "--cluster",
            "h100x8",
            "--fp8-recipe",
            "tensorwise",
        ],
        &["--fp8-recipe tensorwise", "add --dtype fp8"],
    );
}

/// QA: an unknown key's "valid keys here" had listed keys read twice twice
/// (`first_dense, first_dense`).
#[test]
fn valid_keys_are_listed_once() {
    let p = write_tmp(
        "moe-typo.yaml",
        "name: x\narch: llama\nlayers: 4\nhidden: 256\nheads: 4\nvocab: 1000\nseq_len: 128\n\
         ffn_hidden: 512\nmoe: {experts: 8, top_k: 2, capacity_factor: 1.25}\n",
    );
    let o = planner(&["estimate", "--model", &p, "--cluster", "h100x8"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    let keys = err
        .split("valid keys here: ")
        .nth(1)
        .unwrap_or_else(|| panic!("{err}"))
        .trim_end()
        .trim_end_matches(')');
    let list: Vec<&str> = keys.split(", ").collect();
    let mut unique = list.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), list.len(), "{keys}");
    assert!(
        list.contains(&"first_dense") && list.contains(&"top_k"),
        "{keys}"
    );
}

/// `--cross-entropy-loss-fusion` prices Transformer Engine's fused loss (a faster step and
/// less memory for a 128k-word vocabulary), is saved in a plan file, and is Megatron's
/// option: a torchtitan plan with it is refused naming the plan field.
#[test]
fn loss_fusion_is_priced_saved_and_megatron_only() {
    let dir = fresh_dir("loss-fusion");
    let saved = dir.join("fused.json");
    let saved = saved.to_str().unwrap();
    let base = LLAMA_TP2;
    let run = |extra: &[&str]| {
        let v = estimate_json(extra);
        (
            v["step_time_s"].as_f64().unwrap(),
            v["memory_gib_per_gpu"].as_f64().unwrap(),
        )
    };
    let unfused = run(&[]);
    let fused = run(&["--cross-entropy-loss-fusion", "--save-plan", saved]);
    assert!(
        fused.0 < unfused.0 && fused.1 < unfused.1,
        "{fused:?} vs {unfused:?}"
    );
    let text = std::fs::read_to_string(saved).unwrap();
    assert!(
        text.contains("\"cross_entropy_loss_fusion\": true"),
        "{text}"
    );
    bad_input(
        &[
            &base[..],
            &["--cross-entropy-loss-fusion", "--framework", "torchtitan"],
        ]
        .concat(),
        &["`cross_entropy_loss_fusion`", "not torchtitan's"],
    );
    // QA: suggest had priced a torchtitan search without it and said nothing.
    bad_input(
        &[
            "suggest",
            "--model",
            "llama3-8b",
            "--cluster",
            "h100x8",
            "--framework",
            "torchtitan",
            "--cross-entropy-loss-fusion",
        ],
        &["Megatron-Core's option", "not torchtitan's"],
    );
}

/// Splits one CSV record (quoted cells may hold commas).
fn csv_fields(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Every CSV plan row prices again, to the same step time and memory, through `estimate`
/// given its `priced_with` flags with the model and cluster: uneven stages, per-stage
/// recomputation, the embedding and loss taking pipeline slots (`split+emb+loss`), FP8 under
/// current scaling with the fused loss, and a calibration profile (QA round 7: the flags had
/// named the dtype, recipe and kernels but not the layout the columns cannot hold).
#[test]
fn csv_rows_reprice_through_their_priced_with_flags() {
    let cases: [&[&str]; 3] = [
        &[
            "--model",
            "qwen3-235b-a22b",
            "--cluster",
            "h100-x1024",
            "--gpus",
            "64",
            "--top",
            "10",
        ],
        &[
            "--model",
            "llama3-8b",
            "--cluster",
            "h100x8",
            "--dtype",
            "fp8",
            "--fp8-recipe",
            "tensorwise",
            "--cross-entropy-loss-fusion",
            "--top",
            "4",
        ],
        &[
            "--model",
            "mixtral-8x7b",
            "--cluster",
            "h100-x1024",
            "--gpus",
            "64",
            "--calibration",
            "h100-published",
            "--top",
            "4",
        ],
    ];
    let mut split_rows = 0;
    for case in cases {
        let out = stdout(&planner(
            &[&["suggest"], case, &["--format", "csv"]].concat(),
        ));
        let mut lines = out.lines();
        let header = csv_fields(lines.next().unwrap());
        let col = |h: &str| header.iter().position(|x| x == h).unwrap();
        let (with, step, mem, layers) = (
            col("priced_with"),
            col("step_time_s"),
            col("memory_gib"),
            col("stage_layers"),
        );
        let target = &case[..4 + if case.contains(&"--gpus") { 2 } else { 0 }];
        for line in lines {
            let row = csv_fields(line);
            split_rows += usize::from(row[layers].starts_with("split"));
            let flags: Vec<&str> = row[with].split_whitespace().collect();
            let again =
                planner(&[&["estimate"], target, &flags[..], &["--format", "csv"]].concat());
            assert_eq!(
                again.status.code(),
                Some(0),
                "{}: {}",
                row[with],
                stderr(&again)
            );
            let again = stdout(&again);
            let mut back = again.lines().map(csv_fields);
            let h = back.next().unwrap();
            let b = back.next().unwrap();
            let get = |name: &str| &b[h.iter().position(|x| x == name).unwrap()];
            assert_eq!(
                (get("step_time_s"), get("memory_gib"), get("priced_with")),
                (&row[step], &row[mem], &row[with]),
                "{line}"
            );
        }
    }
    assert!(
        split_rows > 0,
        "no row took the embedding and loss as pipeline slots"
    );
    // compare's CSV carries the same column for each method's best plan (its step time to
    // four significant digits).
    let target = ["--model", "llama3-8b", "--cluster", "h100x8"];
    let out = stdout(&planner(
        &[&["compare"], &target[..], &["--format", "csv"]].concat(),
    ));
    let mut lines = out.lines().map(csv_fields);
    let header = lines.next().unwrap();
    let col = |h: &str| header.iter().position(|x| x == h).unwrap();
    let mut priced = 0;
    for row in lines.filter(|r| r[col("priced_with")] != "-") {
        let flags: Vec<&str> = row[col("priced_with")].split_whitespace().collect();
        let again = stdout(&planner(
            &[
                &["estimate"],
                &target[..],
                &flags[..],
                &["--format", "json"],
            ]
            .concat(),
        ));
        let v: serde_json::Value = serde_json::from_str(&again).unwrap();
        let (a, b) = (
            v["step_time_s"].as_f64().unwrap(),
            row[col("step_time_s")].parse::<f64>().unwrap(),
        );
        assert!((a - b).abs() <= 5e-4 * b, "{row:?}: {a}");
        priced += 1;
    }
    assert!(priced >= 2, "{out}");
}
