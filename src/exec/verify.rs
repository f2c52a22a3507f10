//! `planner verify` in the library (DESIGN.md §7): adapt a plan to what a backend executes,
//! describe the cpu as a device (from its calibration profile), refuse runs past stated
//! limits, run the lowered programs, and compare predicted with measured — per step, per
//! instruction class and for peak memory — and write measured kernel times back into a
//! profile.

use super::ExecError;
use super::lower::{Class, Lowered, lower};
use super::run::RunResult;
use crate::calib::{GemmPoint, Profile, Span, median};
use crate::cost::{Estimate, Machine, estimate};
use crate::spec::{ClusterSpec, ModelSpec, Plan, TpOverlap};
use crate::units::{Dtype, GIB, TFLOP, fmt_bytes};
use serde::Serialize;

/// Where a plan runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Threads standing for devices.
    Cpu,
    /// NVIDIA GPUs, one process each.
    Cuda,
}

/// The plan as the backends run it, and what changed. Each rank runs its kernels and its
/// communication one after the other (the cpu backend on one thread, the cuda backend on one
/// stream), so communication the plan overlaps with compute is run, and priced, exposed.
/// FP8 plans are refused: the cuda backend has no FP8 GEMM (that needs cuBLASLt; GemmEx would
/// run them as BF16) and cpu profiles have no FP8 points, so neither would run or price what
/// the estimate of the plan prices.
pub fn executable_plan(plan: &Plan) -> Result<(Plan, Vec<String>), ExecError> {
    if plan.dtype == Dtype::Fp8 {
        return Err(ExecError::Config(
            "plan: `dtype` fp8: verify cannot run fp8 GEMMs yet (they need cuBLASLt, and cpu \
             profiles have no fp8 points to price them): verify the plan with --dtype bf16 \
             (`\"dtype\": \"bf16\"` in a plan file, without `fp8_param_gather`)"
                .into(),
        ));
    }
    let mut p = plan.clone();
    let mut notes = Vec::new();
    if p.tp > 1 && p.tp_overlap != TpOverlap::None {
        notes.push(format!(
            "tp_overlap {} → none: verify runs each rank's communication and compute one \
             after the other, so the prediction is made without the overlap too",
            p.tp_overlap.name()
        ));
        p.tp_overlap = TpOverlap::None;
    }
    if p.overlap_grad_reduce && p.dp * p.cp > 1 {
        notes.push(
            "overlap_grad_reduce → off: the gradient reduction runs after the last backward".into(),
        );
        p.overlap_grad_reduce = false;
    }
    if p.scatters_p2p() {
        notes.push(
            "legacy Megatron's pipeline transfers are priced with the TP all-gather of the \
             received parts but run here as one send and one receive per pass"
                .into(),
        );
    }
    if p.framework == crate::spec::Framework::DeepSpeed && p.pp > 1 {
        notes.push(
            "DeepSpeed's pipeline transfers are priced as its engine runs them (receive and \
             send blocking one after the other, TP parts gathered) but run here as one send \
             and one receive per pass"
                .into(),
        );
    }
    Ok((p, notes))
}

/// The cluster as the verify backends run it: each rank's communication after its compute,
/// on one thread or one stream, so a collective the plan would overlap (the sequence-parallel
/// weight-gradient all-gather, the context-parallel ring, ZeRO-3's prefetches) stalls the
/// compute for all of its time — overlap interference 1 (`cost::step::overlap_exposed_s`).
pub fn run_serially(cluster: &mut ClusterSpec) {
    cluster.gpu.efficiency.overlap_interference = 1.0;
}

/// The cpu as the cost model's device, from a cpu profile (as `cpu_profile` adapts it): `ranks` thread-devices with
/// `memory_gib` among them. Peak = the best measured GEMM rate (every data type runs as f32
/// on the cores); GEMM efficiency 1 (the profile's per-shape measurements carry the rest);
/// memory-bound kernels of every class stream at the profile's copy bandwidth (the cpu runs
/// them all as the same streaming pass from main memory); no launch overhead and no CUDA context (the measured
/// times already include the calls); one "SM" (a core runs one GEMM at a time, so no wave
/// quantisation); attention at the profile's rate for its 128-row block GEMMs (the cpu runs
/// attention as those GEMMs). Collectives the profile lacks fall back to its measured 2-rank
/// all-reduce bandwidth and latency.
pub fn cpu_cluster(
    profile: &Profile,
    ranks: u64,
    memory_gib: f64,
    head_dim: u64,
) -> Result<ClusterSpec, ExecError> {
    let peak = profile
        .gemm
        .iter()
        .map(GemmPoint::flops_s)
        .fold(0.0, f64::max);
    let hbm = profile.hbm_gbytes_s.unwrap_or(0.0);
    if peak <= 0.0 || hbm <= 0.0 {
        return Err(ExecError::Config(format!(
            "profile `{}` has no GEMM points or no copy bandwidth: calibrate the cpu again \
             with a larger --budget-s",
            profile.name
        )));
    }
    let p = peak / TFLOP;
    // Collectives the profile has no fit for (another group size, or a pair the cost model
    // places on two nodes) fall back to the cluster's link: the measured 2-rank all-reduce
    // (bus bandwidth at its largest size, latency of its smallest), else half the copy
    // bandwidth (a transfer copies in and out) and 10 µs.
    let (bw, lat_us) = profile
        .fit_of(crate::graph::Coll::AllReduce, 2, Span::Intra)
        .and_then(|f| {
            let (lo, hi) = f.range();
            (hi > 0.0).then(|| (f.busbw_gbytes_s(hi), 1e6 * f.predict(lo)))
        })
        .unwrap_or((hbm / 2.0, 10.0));
    let text = format!(
        "name: cpu\ngpu: {{name: cpu-thread, memory_gib: {mem}, hbm_gbytes_s: {hbm}, sms: 1, \
         gemm_tiles: false, peak_tflops: {{bf16: {p}, fp16: {p}, fp8: {p}, tf32: {p}, fp32: {p}}}, \
         efficiency: {{gemm: 1, hbm: 1, reduction: 1, reduction_bwd: 1}}}}\n\
         nodes: 1\ngpus_per_node: {ranks}\n\
         intra_node: {{fabric: threads, bw_gbytes_s: {bw}, latency_us: {lat_us}, \
         efficiency: 1}}\n",
        mem = memory_gib / ranks.max(1) as f64,
    );
    let mut c = ClusterSpec::from_yaml("cpu (from the profile)", &text, &crate::spec::load_device)
        .map_err(|e| ExecError::Config(e.to_string()))?;
    c.cuda_context_gib = 0.0;
    c.gpu.efficiency.kernel_launch_us = 0.0;
    let m = Machine {
        cluster: &c,
        profile: Some(profile),
    };
    let b = super::run::BLOCK;
    let flops = 2.0 * (b * b * head_dim) as f64;
    let rate = flops / m.gemm_s(Dtype::Bf16, 1, b, b, head_dim).0;
    let eff = (rate / peak).clamp(1e-3, 1.0);
    c.gpu.efficiency.attention_fwd = eff;
    c.gpu.efficiency.attention_bwd = eff;
    c.gpu.efficiency.attention_fa2_fwd = eff;
    c.gpu.efficiency.attention_fa2_bwd = eff;
    // The rate was measured at the model's own head dimension, and the cpu's softmax is no
    // separate unit: nothing to rescale by head dimension.
    c.gpu.tensor_flops_per_exp = 0.0;
    run_serially(&mut c);
    Ok(c)
}

/// A cpu profile as the cpu device is priced with it: its memory bandwidth is that of the
/// smallest copy probe — chunks moving through an arena beyond the caches (`cpu::copy_on`),
/// as the cpu backend's memory-bound kernels copy activation-sized chunks through a rank's
/// memory (`cpu_run`). The best probe overstated them by about a third: the whole-arena copy
/// runs on the C library's non-temporal stores, which those chunks do not get.
pub fn cpu_profile(profile: &Profile) -> Profile {
    let mut p = profile.clone();
    if let Some(c) = p.copies.iter().min_by(|a, b| a.bytes.total_cmp(&b.bytes)) {
        p.hbm_gbytes_s = Some(c.gbytes_s());
    }
    p
}

/// Limits a cpu run must stay within.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuLimits {
    /// Memory all ranks may allocate together, GiB.
    pub memory_gib: f64,
    /// Seconds the whole run (warm-up and timed steps) may take by the prediction.
    pub time_s: f64,
}

/// Refuses a cpu run whose buffers would exceed `limits.memory_gib` or whose predicted run
/// time exceeds `limits.time_s`, saying what to change.
pub fn check_cpu_limits(e: &Estimate, steps: u32, limits: &CpuLimits) -> Result<(), ExecError> {
    let per_stage: Vec<f64> = e
        .stages
        .iter()
        .map(|s| s.memory.total() - s.memory.runtime)
        .collect();
    let ranks_per_stage = (e.n_gpus / e.stages.len().max(1) as u64) as f64;
    let total_gib = per_stage.iter().sum::<f64>() * ranks_per_stage / GIB;
    if total_gib > limits.memory_gib {
        return Err(ExecError::Config(format!(
            "the cpu backend would allocate about {} for this plan's buffers (model state and \
             activations of {} ranks), above the limit of {}: verify a smaller model or \
             micro-batch on the cpu, use --backend cuda, or raise --cpu-memory-gib",
            fmt_bytes(total_gib * GIB),
            e.n_gpus,
            fmt_bytes(limits.memory_gib * GIB)
        )));
    }
    let run_s = e.step_time_s * f64::from(steps);
    if run_s > limits.time_s {
        return Err(ExecError::Config(format!(
            "the cpu backend would take about {run_s:.0} s ({:.1} s per step × {steps} \
             steps), above the limit of {:.0} s: verify a smaller model or fewer --steps on \
             the cpu, use --backend cuda, or raise --time-limit-s",
            e.step_time_s, limits.time_s
        )));
    }
    Ok(())
}

/// Seconds by class, the report's rows: compute split into GEMMs and memory-bound kernels,
/// then Estimate::breakdown's communication, optimizer and bubble terms. They add up to the
/// step time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Classes {
    /// GEMMs and attention, forward and backward.
    pub gemm_s: f64,
    /// Memory-bound kernels, forward and backward.
    pub memory_bound_s: f64,
    /// Recomputed forward kernels.
    pub recompute_s: f64,
    /// Tensor-parallel collectives.
    pub tp_comm_s: f64,
    /// Pipeline sends and receives.
    pub pp_comm_s: f64,
    /// Gradient reduction and ZeRO-3 collectives.
    pub dp_comm_s: f64,
    /// Context- and expert-parallel communication.
    pub other_comm_s: f64,
    /// Optimizer step.
    pub optimizer_s: f64,
    /// Idle: pipeline fill and drain, waiting on other ranks.
    pub bubble_s: f64,
}

impl Classes {
    /// The classes with their JSON names, in report order.
    pub fn rows(&self) -> [(&'static str, f64); 9] {
        [
            ("gemm_s", self.gemm_s),
            ("memory_bound_s", self.memory_bound_s),
            ("recompute_s", self.recompute_s),
            ("tp_comm_s", self.tp_comm_s),
            ("pp_comm_s", self.pp_comm_s),
            ("dp_comm_s", self.dp_comm_s),
            ("other_comm_s", self.other_comm_s),
            ("optimizer_s", self.optimizer_s),
            ("bubble_s", self.bubble_s),
        ]
    }

    /// Busy classes from per-class seconds; the bubble is `step_s` minus their sum (≥ 0).
    fn from(get: impl Fn(Class) -> f64, step_s: f64) -> Classes {
        // A class with no instructions sums to −0.0 (Rust's float `Sum` starts there), which
        // JSON would print as `-0.0`, a negative time: + 0.0 makes it 0.
        let get = |c| get(c) + 0.0;
        let mut c = Classes {
            gemm_s: get(Class::Gemm),
            memory_bound_s: get(Class::Memory),
            recompute_s: get(Class::Recompute),
            tp_comm_s: get(Class::TpComm),
            pp_comm_s: get(Class::PpComm),
            dp_comm_s: get(Class::DpComm),
            other_comm_s: get(Class::OtherComm),
            optimizer_s: get(Class::Optimizer),
            bubble_s: 0.0,
        };
        let busy: f64 = c.rows().iter().map(|r| r.1).sum();
        c.bubble_s = (step_s - busy).max(0.0);
        c
    }
}

/// Peak memory of the fullest rank, predicted and measured, on the same basis.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryCompared {
    /// Predicted GiB (the estimate's stage memory, less what the backend does not have).
    pub predicted_gib: f64,
    /// Measured GiB.
    pub measured_gib: f64,
    /// What both count.
    pub basis: String,
}

/// What was measured, in the estimate's terms.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Measured {
    /// Median seconds per step (device time on cpu, wall time between barriers on cuda).
    pub step_time_s: f64,
    /// Every timed step.
    pub step_times_s: Vec<f64>,
    /// Run-to-run spread of the step time: (max − min) / median over the timed steps.
    pub spread: f64,
    /// Median wall-clock seconds per step.
    pub wall_step_time_s: f64,
    /// The reported rank's seconds by class (medians over steps).
    pub classes: Classes,
    /// The rank the classes are of (the one the cost model predicts busiest).
    pub rank: u64,
    /// Peak memory.
    pub memory: MemoryCompared,
    /// cpu: how fast the cores ran the plan's heaviest GEMM shapes around the run, relative
    /// to the profile (profile seconds / seconds now; below 1: slower than at calibration, as
    /// when other work shares the host). `None` on cuda or without such points.
    pub host_speed: Option<f64>,
}

/// (predicted − measured) / measured of each compared quantity; `None` where nothing was
/// measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Errors {
    /// Step time.
    pub step_time: f64,
    /// Per class, in `Classes::rows` order and names.
    pub classes: Vec<(&'static str, Option<f64>)>,
    /// Peak memory.
    pub peak_memory: Option<f64>,
}

/// A plan verified: the estimate, the same split as measured, and the errors.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verification {
    /// Where it ran.
    pub backend: BackendKind,
    /// The cost model's estimate of the plan as run.
    pub estimate: Estimate,
    /// The estimate split by class for the reported rank (instruction prices; the bubble is
    /// the estimate's step time less the rank's busy time).
    pub predicted: Classes,
    /// The measurements.
    pub measured: Measured,
    /// Relative errors.
    pub error: Errors,
    /// What the backend changed or could not do as planned.
    pub notes: Vec<String>,
}

/// Relative error of a prediction: (predicted − measured) / measured; `None` without a
/// measurement.
pub fn relative(pred: f64, meas: f64) -> Option<f64> {
    (meas > 0.0).then(|| (pred - meas) / meas)
}

pub(crate) fn median_of(mut v: Vec<f64>) -> f64 {
    if v.is_empty() { 0.0 } else { median(&mut v) }
}

/// Compares a run with its estimate. The classes are those of the rank whose program the cost
/// model prices busiest; memory compares the fullest rank with the fullest stage, on the
/// cpu without the CUDA context, NCCL buffers and allocator share it does not have.
pub fn compare(
    backend: BackendKind,
    est: &Estimate,
    lowered: &Lowered,
    run: &RunResult,
    notes: Vec<String>,
) -> Verification {
    let busy = |p: &super::lower::Program| -> f64 { p.instrs.iter().map(|i| i.predicted_s).sum() };
    let crit =
        lowered.programs.iter().fold(
            &lowered.programs[0],
            |a, p| if busy(p) > busy(a) { p } else { a },
        );
    let predicted = Classes::from(|c| crit.predicted(c), est.step_time_s);
    let step_time_s = median_of(run.step_times_s.clone());
    let measured_classes = measured_classes(run, crit.rank, step_time_s);
    let (lo, hi) = run
        .step_times_s
        .iter()
        .fold((f64::MAX, 0.0f64), |(a, b), &t| (a.min(t), b.max(t)));
    let memory = memory_compared(backend, est, run);
    let error = Errors {
        step_time: relative(est.step_time_s, step_time_s).unwrap_or(f64::NAN),
        classes: predicted
            .rows()
            .iter()
            .zip(measured_classes.rows())
            .map(|((name, p), (_, m))| (*name, relative(*p, m)))
            .collect(),
        peak_memory: relative(memory.predicted_gib, memory.measured_gib),
    };
    Verification {
        backend,
        estimate: est.clone(),
        predicted,
        measured: Measured {
            step_time_s,
            spread: if step_time_s > 0.0 {
                (hi - lo) / step_time_s
            } else {
                0.0
            },
            step_times_s: run.step_times_s.clone(),
            wall_step_time_s: median_of(run.wall_step_times_s.clone()),
            classes: measured_classes,
            rank: crit.rank,
            memory,
            host_speed: None,
        },
        error,
        notes,
    }
}

/// The medians over the steps of rank `rank`'s seconds per class; its bubble is the median of
/// each step's time less the rank's busy time in it.
fn measured_classes(run: &RunResult, rank: u64, step_time_s: f64) -> Classes {
    let r = &run.ranks[rank as usize];
    let mut c = Classes::from(
        |c| median_of(r.steps.iter().map(|s| s.get(c)).collect()),
        step_time_s,
    );
    c.bubble_s = median_of(
        r.steps
            .iter()
            .zip(&run.step_times_s)
            .map(|(s, t)| (t - s.busy_s()).max(0.0))
            .collect(),
    );
    c
}

fn memory_compared(backend: BackendKind, est: &Estimate, run: &RunResult) -> MemoryCompared {
    let measured = run
        .ranks
        .iter()
        .map(|r| r.memory.total_bytes)
        .fold(0.0, f64::max);
    let (predicted, basis) = match backend {
        BackendKind::Cpu => (
            est.stages
                .iter()
                .map(|s| s.memory.total() - s.memory.runtime)
                .fold(0.0, f64::max),
            "cpu: model state, saved activations and working buffers as allocated (the cpu \
             has no CUDA context, NCCL buffers or caching allocator; its GEMM operands are f32)",
        ),
        BackendKind::Cuda => (
            est.memory_gib_per_gpu * GIB,
            "cuda: the device's used memory at its peak (total − free), context and NCCL \
             buffers included",
        ),
    };
    MemoryCompared {
        predicted_gib: predicted / GIB,
        measured_gib: measured / GIB,
        basis: basis.into(),
    }
}

/// Verifies `plan` on the cpu backend priced with `profile` (a cpu profile): adapts the plan
/// (`executable_plan`), describes the cores (`cpu_cluster`), checks the limits, lowers, runs
/// and compares. Also returns the run, for `write_back`.
pub fn verify_cpu(
    model: &ModelSpec,
    plan: &Plan,
    profile: &Profile,
    cfg: super::run::RunConfig,
    limits: &CpuLimits,
    progress: &mut dyn FnMut(super::Progress),
) -> Result<(Verification, RunResult), ExecError> {
    if profile.meta.backend != "cpu" {
        return Err(ExecError::Config(format!(
            "--calibration {}: measured by the `{}` backend, but the cpu backend is priced with \
             a cpu profile: run `planner calibrate --backend cpu --cluster C --devices {} \
             --out calibrate/NAME` and pass --calibration calibrate/NAME",
            profile.name,
            profile.meta.backend,
            plan.n_gpus()
        )));
    }
    let (plan, notes) = executable_plan(plan)?;
    let profile = &cpu_profile(profile);
    let cluster = cpu_cluster(profile, plan.n_gpus(), limits.memory_gib, model.head_dim())?;
    let why = plan.check(model, &cluster);
    if let Some(w) = why.first() {
        return Err(ExecError::Config(format!("plan: `{}`: {w}", w.field())));
    }
    let est = estimate(model, &cluster, &plan, Some(profile));
    check_cpu_limits(&est, cfg.warmup + cfg.steps, limits)?;
    let m = Machine {
        cluster: &cluster,
        profile: Some(profile),
    };
    let lowered = lower(model, &plan, &m).map_err(|e| ExecError::Config(e.to_string()))?;
    let before = host_speed(profile, &lowered, plan.dtype, plan.n_gpus())?;
    let run = super::cpu_run::run(&lowered, cfg, progress)?;
    let after = host_speed(profile, &lowered, plan.dtype, plan.n_gpus())?;
    let mut v = compare(BackendKind::Cpu, &est, &lowered, &run, notes);
    let all: Vec<f64> = before.into_iter().chain(after).collect();
    v.measured.host_speed = (!all.is_empty()).then(|| median_of(all));
    Ok((v, run))
}

/// Ratios profile seconds / seconds now of the (up to) three GEMM shapes the plan spends the
/// most predicted time in that the profile measured exactly, timed as the cpu probes time
/// them (on every thread-device at once).
fn host_speed(
    profile: &Profile,
    l: &Lowered,
    dtype: Dtype,
    ranks: u64,
) -> Result<Vec<f64>, ExecError> {
    let mut time: std::collections::BTreeMap<(u64, u64, u64), f64> = Default::default();
    for i in l.programs.iter().flat_map(|p| &p.instrs) {
        if let super::lower::Op::Gemm { batch: 1, m, n, k } = i.op {
            *time.entry((m, n, k)).or_default() += i.predicted_s;
        }
    }
    let mut known: Vec<((u64, u64, u64), f64, f64)> = time
        .into_iter()
        .filter_map(|(s, t)| {
            let p = profile
                .gemm
                .iter()
                .find(|g| g.dtype == dtype && (g.m, g.n, g.k) == s)?;
            Some((s, t, p.seconds))
        })
        .collect();
    known.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut cpu = super::cpu::Cpu::new(ranks, 4096.0);
    let mut out = Vec::new();
    for ((m, n, k), _, then) in known.into_iter().take(3) {
        use super::probe::Backend;
        let now = super::cpu::TIMING.measure(|iters| cpu.gemm(dtype, m, n, k, iters))?;
        out.push(then / now);
    }
    Ok(out)
}

mod write_back;
pub use write_back::{WriteBack, write_back};

#[cfg(test)]
mod tests;
