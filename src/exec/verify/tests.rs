//! Tests of verify's pure parts: the executable plan, the cpu device, the limits, the
//! comparison and the write-back, with hand-made profiles and runs.

use super::*;
use crate::calib::{CollectiveFit, CollectivePoint, CopyPoint, Meta};
use crate::exec::run::{KernelKey, MemoryPeak, RankRun, StepRecord};
use crate::graph::Coll;
use crate::spec::{AttentionImpl, load_cluster};
use std::collections::{BTreeMap, HashMap};

const SMALL: &str =
    "name: small\narch: gpt\nlayers: 4\nhidden: 512\nheads: 8\nvocab: 8192\nseq_len: 256\n";

fn small() -> ModelSpec {
    ModelSpec::from_yaml("small.yaml", SMALL).unwrap()
}

/// A cpu profile: 2·256·512·512 = 134.2 MFLOP GEMMs at 100 GFLOP/s (1.342 ms), one at 50;
/// copies of 1 MiB at 80 GB/s and 256 MiB at 20 GB/s of traffic.
fn profile() -> Profile {
    let mut p = Profile::new(
        "cpu-test",
        Meta {
            device: "cpu".into(),
            backend: "cpu".into(),
            ..Meta::default()
        },
    );
    let g = |m: u64, n: u64, k: u64, rate: f64| GemmPoint {
        dtype: Dtype::Bf16,
        m,
        n,
        k,
        seconds: 2.0 * (m * n * k) as f64 / rate,
    };
    p.gemm = vec![g(256, 512, 512, 100e9), g(128, 128, 64, 50e9)];
    let mib = 1048576.0;
    p.set_copies(vec![
        CopyPoint {
            bytes: mib,
            seconds: 2.0 * mib / 80e9,
        },
        CopyPoint {
            bytes: 256.0 * mib,
            seconds: 2.0 * 256.0 * mib / 20e9,
        },
    ]);
    p
}

#[test]
fn overlap_is_switched_off_and_said() {
    let mut p = Plan::new(2, 2, 1, 1, 8, 256);
    p.overlap_grad_reduce = true;
    let (q, notes) = executable_plan(&p).unwrap();
    assert_eq!(q.tp_overlap, TpOverlap::None);
    assert!(!q.overlap_grad_reduce);
    assert_eq!(notes.len(), 2, "{notes:?}");
    // Nothing to change: no notes.
    let mut plain = Plan::new(1, 1, 2, 1, 8, 256);
    plain.tp_overlap = TpOverlap::None;
    assert!(executable_plan(&plain).unwrap().1.is_empty());
    // A DeepSpeed pipeline is priced with its blocking transfers but run with batched ones.
    let mut ds = plain.clone();
    ds.framework = crate::spec::Framework::DeepSpeed;
    let notes = executable_plan(&ds).unwrap().1;
    assert!(
        notes.len() == 1 && notes[0].contains("DeepSpeed's pipeline transfers"),
        "{notes:?}"
    );
}

/// The verify backends run each rank's communication after its compute, so the prediction
/// prices it so: on the serial cluster (overlap interference 1) what sequence parallelism
/// hides behind the backward — the weight-gradient all-gathers — is TP time on the step, and
/// verify has nothing left to warn about. The small GPT at tp 2 on two A100s, b·s = 256.
#[test]
fn verify_prices_every_collective_exposed() {
    let mut p = Plan::new(1, 2, 1, 1, 8, 256);
    (p.sequence_parallel, p.tp_overlap) = (true, TpOverlap::None);
    let (q, notes) = executable_plan(&p).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    let c = load_cluster("a100x8").unwrap().with_gpus(2).unwrap();
    let mut serial = c.clone();
    run_serially(&mut serial);
    assert_eq!(serial.gpu.efficiency.overlap_interference, 1.0);
    let tp = |c: &ClusterSpec| {
        crate::cost::estimate(&small(), c, &q, None)
            .breakdown
            .tp_comm_s
    };
    assert!(tp(&serial) > tp(&c), "{} vs {}", tp(&serial), tp(&c));
    let cpu = cpu_cluster(&cpu_profile(&profile()), 2, 64.0, 64).unwrap();
    assert_eq!(cpu.gpu.efficiency.overlap_interference, 1.0);
}

#[test]
fn fp8_plans_are_refused_not_run_as_bf16() {
    let mut p = Plan::new(1, 1, 2, 1, 8, 256);
    p.dtype = Dtype::Fp8;
    let e = executable_plan(&p).unwrap_err().to_string();
    assert!(
        e.contains("`dtype` fp8") && e.contains("--dtype bf16"),
        "{e}"
    );
}

#[test]
fn the_cpu_device_is_read_from_its_profile() {
    let p = cpu_profile(&profile());
    // Chunks through the arena, as the kernels copy: the 1 MiB probe's 80 GB/s (the fixture's
    // figures are arbitrary), not the whole-arena copy's 20.
    assert!((p.hbm_gbytes_s.unwrap() - 80.0).abs() < 1e-9);
    let c = cpu_cluster(&p, 2, 8.0, 64).unwrap();
    // Peak = the best GEMM, 100 GFLOP/s = 0.1 TFLOP/s, for every type.
    assert!((c.gpu.peak_tflops.bf16 - 0.1).abs() < 1e-12);
    assert!((c.gpu.peak_tflops.fp32 - 0.1).abs() < 1e-12);
    assert_eq!((c.gpu.sms, c.gpus_per_node, c.nodes), (1, 2, 1));
    assert_eq!(c.gpu.memory_gib, 4.0);
    assert_eq!(
        (c.gpu.efficiency.kernel_launch_us, c.cuda_context_gib),
        (0.0, 0.0)
    );
    // No collective measured: links at half the copy bandwidth (copied in and out), 10 µs.
    assert_eq!(
        (c.intra_node.bw_gbytes_s, c.intra_node.latency_us),
        (40.0, 10.0)
    );
    // A 2-rank all-reduce of 20 µs + S / 2 GB/s: its bus bandwidth (factor 1 on 2 ranks) at
    // the largest size, 2^20 / (20e-6 + 2^20 / 2e9) bytes/s, and its latency at the smallest.
    let mut with = p.clone();
    let pts = [4096.0, 1048576.0]
        .iter()
        .map(|&b| CollectivePoint {
            bytes: b,
            seconds: 20e-6 + b / 2e9,
            busbw_gbytes_s: None,
            residual: 0.0,
        })
        .collect();
    with.collectives
        .push(CollectiveFit::fit(Coll::AllReduce, 2, Span::Intra, pts));
    let c2 = cpu_cluster(&with, 2, 8.0, 64).unwrap();
    let bw = 1048576.0 / (20e-6 + 1048576.0 / 2e9) / 1e9;
    assert!(
        (c2.intra_node.bw_gbytes_s - bw).abs() < 1e-6,
        "{}",
        c2.intra_node.bw_gbytes_s
    );
    let lat = 1e6 * (20e-6 + 4096.0 / 2e9);
    assert!((c2.intra_node.latency_us - lat).abs() < 1e-6);
    // Attention runs at its 128×128×64 block GEMM's measured 50 GFLOP/s: half the peak.
    assert!((c.gpu.efficiency.attention_fwd - 0.5).abs() < 1e-9);
    let m = Machine {
        cluster: &c,
        profile: Some(&p),
    };
    // A measured shape prices at its measurement; a memory-bound kernel of 1 GB at 80 GB/s.
    let (t, _) = m.gemm_s(Dtype::Bf16, 1, 256, 512, 512);
    assert!(
        (t - 2.0 * 256.0 * 512.0 * 512.0 / 100e9).abs() < 1e-12,
        "{t}"
    );
    let (t, _) = m.memory_s(1e9, crate::graph::MemClass::ReductionBwd);
    assert!((t - 0.0125).abs() < 1e-12, "{t}");
    // No GEMM points: a clear error.
    let mut empty = p.clone();
    empty.gemm.clear();
    assert!(cpu_cluster(&empty, 2, 8.0, 64).is_err());
}

#[test]
fn runs_past_the_limits_are_refused_with_the_flag_to_change() {
    let p = cpu_profile(&profile());
    let c = cpu_cluster(&p, 2, 8.0, 64).unwrap();
    let plan = Plan::new(2, 1, 1, 1, 8, 256);
    let e = crate::cost::estimate(&small(), &c, &plan, Some(&p));
    let ok = CpuLimits {
        memory_gib: 8.0,
        time_s: 600.0,
    };
    assert!(check_cpu_limits(&e, 4, &ok).is_ok());
    let tight = CpuLimits {
        memory_gib: 0.01,
        ..ok
    };
    let err = check_cpu_limits(&e, 4, &tight).unwrap_err().to_string();
    assert!(err.contains("--cpu-memory-gib"), "{err}");
    let slow = CpuLimits { time_s: 1e-3, ..ok };
    let err = check_cpu_limits(&e, 4, &slow).unwrap_err().to_string();
    assert!(err.contains("--time-limit-s"), "{err}");
}

fn record(classes: &[(Class, f64)], end_s: f64) -> StepRecord {
    StepRecord {
        class_s: classes.iter().copied().collect::<BTreeMap<_, _>>(),
        wait_s: 0.0,
        end_s,
    }
}

#[test]
fn comparison_takes_medians_and_relative_errors() {
    // dp = 2 on two ranks; rank 0 measured 3 steps: GEMMs 1.0, 1.2, 1.1 s and DP 0.1 s; the
    // steps end at 1.5, 1.6 and 1.4 s. Step: median 1.5 s, spread (1.6 − 1.4)/1.5; bubble:
    // median of (1.5 − 1.1, 1.6 − 1.3, 1.4 − 1.2) = 0.3 s.
    let p = cpu_profile(&profile());
    let c = cpu_cluster(&p, 2, 8.0, 64).unwrap();
    let mut plan = Plan::new(2, 1, 1, 1, 4, 256);
    plan.attention = AttentionImpl::Unfused;
    let m = Machine {
        cluster: &c,
        profile: Some(&p),
    };
    let e = crate::cost::estimate(&small(), &c, &plan, Some(&p));
    let l = lower(&small(), &plan, &m).unwrap();
    let steps = |g: [f64; 3]| {
        g.iter()
            .zip([1.5, 1.6, 1.4])
            .map(|(&g, t)| record(&[(Class::Gemm, g), (Class::DpComm, 0.1)], t))
            .collect::<Vec<_>>()
    };
    let rank = |r: u64| RankRun {
        rank: r,
        steps: steps([1.0, 1.2, 1.1]),
        memory: MemoryPeak {
            total_bytes: 1.5 * GIB,
            ..MemoryPeak::default()
        },
        samples: HashMap::new(),
    };
    let run = RunResult::from_ranks(vec![rank(0), rank(1)], vec![2.0, 2.0, 2.0]);
    let v = compare(BackendKind::Cpu, &e, &l, &run, vec![]);
    let ms = &v.measured;
    assert_eq!(ms.step_time_s, 1.5);
    assert!((ms.spread - 0.2 / 1.5).abs() < 1e-12);
    assert_eq!(ms.classes.gemm_s, 1.1);
    assert!(
        (ms.classes.bubble_s - 0.3).abs() < 1e-12,
        "{}",
        ms.classes.bubble_s
    );
    assert!((v.error.step_time - (e.step_time_s - 1.5) / 1.5).abs() < 1e-12);
    let gemm = v
        .error
        .classes
        .iter()
        .find(|c| c.0 == "gemm_s")
        .unwrap()
        .1
        .unwrap();
    assert!((gemm - (v.predicted.gemm_s - 1.1) / 1.1).abs() < 1e-12);
    // Nothing measured for TP: no error.
    assert_eq!(
        v.error
            .classes
            .iter()
            .find(|c| c.0 == "tp_comm_s")
            .unwrap()
            .1,
        None
    );
    // The predicted classes add up to the estimate's step time.
    let sum: f64 = v.predicted.rows().iter().map(|r| r.1).sum();
    assert!((sum - e.step_time_s).abs() < 1e-9 * sum);
    assert_eq!(ms.memory.measured_gib, 1.5);
}

#[test]
fn write_back_replaces_measured_points_and_refits() {
    let mut p = profile();
    let pts = [4096.0, 8192.0]
        .iter()
        .map(|&b| CollectivePoint {
            bytes: b,
            seconds: 1e-5 + b / 1e9,
            busbw_gbytes_s: None,
            residual: 0.0,
        })
        .collect();
    p.collectives
        .push(CollectiveFit::fit(Coll::AllReduce, 2, Span::Intra, pts));
    let mut samples = HashMap::new();
    samples.insert(
        KernelKey::Gemm {
            m: 256,
            n: 512,
            k: 512,
        },
        vec![1e-3, 3e-3, 2e-3],
    );
    let ar = KernelKey::Coll {
        coll: Coll::AllReduce,
        ranks: 2,
        inter: false,
        bytes: 8192,
    };
    samples.insert(ar, vec![5e-5, 7e-5, 6e-5]);
    let run = RunResult {
        ranks: vec![RankRun {
            samples,
            ..RankRun::default()
        }],
        ..RunResult::default()
    };
    let wb = write_back(&mut p, &run, Dtype::Bf16, "dp=2");
    assert_eq!((wb.gemm_points, wb.collective_points, wb.fits), (1, 1, 1));
    // The GEMM's median replaces the old point; the other point stays.
    let g: Vec<_> = p
        .gemm
        .iter()
        .filter(|g| (g.m, g.n, g.k) == (256, 512, 512))
        .collect();
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].seconds, 2e-3);
    assert_eq!(p.gemm.len(), 2);
    // The 8 KiB point is now the measured 60 µs; 4 KiB keeps its probe.
    let f = p.fit_of(Coll::AllReduce, 2, Span::Intra).unwrap();
    let at = |b: f64| f.points.iter().find(|q| q.bytes == b).unwrap().seconds;
    assert_eq!(at(8192.0), 6e-5);
    assert_eq!(at(4096.0), 1e-5 + 4096.0 / 1e9);
    assert_eq!(f.source.as_deref(), Some("verify"));
    assert!(p.meta.notes.unwrap().contains("planner verify"));
}

#[test]
fn a_plan_runs_on_cpu_thread_devices_end_to_end() {
    // A tiny model on 4 thread-devices (tp = 2, pp = 2, 1F1B, 4 micro-batches), 1 step:
    // every rank finishes, and stage 0 held 2 micro-batches' activations at once
    // (min(p − i, m) = 2), as the lowering kept them.
    let tiny = ModelSpec::from_yaml(
        "tiny.yaml",
        "name: tiny\narch: gpt\nlayers: 2\nhidden: 64\nheads: 2\nvocab: 128\nseq_len: 32\n",
    )
    .unwrap();
    let c = load_cluster("a100x8").unwrap().with_gpus(4).unwrap();
    let m = Machine {
        cluster: &c,
        profile: None,
    };
    let mut plan = Plan::new(1, 2, 2, 1, 4, 32);
    plan.tp_overlap = TpOverlap::None;
    let l = lower(&tiny, &plan, &m).unwrap();
    let cfg = crate::exec::run::RunConfig {
        warmup: 0,
        steps: 1,
    };
    let mut ticks = 0;
    let run = crate::exec::cpu_run::run(&l, cfg, &mut |_| ticks += 1).unwrap();
    assert_eq!(ticks, 1);
    assert_eq!(run.step_times_s.len(), 1);
    assert!(run.step_times_s[0] > 0.0);
    let slot = l.programs[0]
        .instrs
        .iter()
        .find_map(|i| match i.op {
            super::super::lower::Op::Keep { bytes, .. } => Some(bytes),
            _ => None,
        })
        .unwrap();
    assert_eq!(run.ranks[0].memory.activation_bytes, 2.0 * slot);
    for r in &run.ranks {
        let s = &r.steps[0];
        assert!(
            s.get(Class::Gemm) > 0.0 && s.get(Class::TpComm) > 0.0,
            "{s:?}"
        );
        assert!(s.get(Class::PpComm) > 0.0, "rank {}", r.rank);
        assert!(
            r.samples
                .keys()
                .any(|k| matches!(k, KernelKey::Gemm { .. }))
        );
    }
}

/// A class the critical rank never runs is 0, not −0.0 (an empty float sum), which the JSON
/// contract would print as a negative time.
#[test]
fn classes_without_instructions_are_zero_not_negative_zero() {
    let empty: f64 = std::iter::empty::<f64>().sum();
    assert!(empty.is_sign_negative(), "Rust's float Sum starts at −0.0");
    let c = Classes::from(|_| empty, 1.0);
    for (name, v) in c.rows() {
        assert!(v.is_sign_positive(), "{name} = {v}");
    }
    assert_eq!(c.bubble_s, 1.0);
}
