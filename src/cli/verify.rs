//! `planner verify` and `suggest --verify K`: run plans on a backend and print predicted vs
//! measured per step, per class and for peak memory (JSON: the contract below), with a
//! progress bar; `--write-back` stores the measured kernels in the profile.
//!
//! JSON (`--format json`), one object, consumed by `planner report --verify FILE`:
//! `{"backend", "model", "cluster", "device", "n_devices", "plan", "predicted": {…every field
//! of `planner estimate --format json`…, "classes": CLASSES, "peak_memory_gib"}, "measured":
//! {"step_time_s", "step_times_s", "spread", "wall_step_time_s", "rank", "classes": CLASSES,
//! "peak_memory_gib", "memory_basis", "host_speed" (cpu; else null)}, "error": {"step_time",
//! "classes": CLASSES (null where nothing was measured), "peak_memory"}, "notes": […],
//! "write_back": null | {…}}`, where CLASSES = {"gemm_s", "memory_bound_s", "recompute_s",
//! "tp_comm_s", "pp_comm_s", "dp_comm_s", "other_comm_s", "optimizer_s", "bubble_s"} (errors
//! are relative: (predicted − measured) / measured).

use super::args::Resolved;
use super::calibrate::BackendArg;
use super::{CliError, Format, PlanArgs, Target, json, render};
use crate::cost::Estimate;
use crate::exec::run::{RunConfig, RunResult};
use crate::exec::verify::{self, CpuLimits, Verification, WriteBack};
use crate::exec::{self, Progress};
use crate::spec::Plan;
use crate::units::fmt_secs;
use clap::Args;
use serde_json::{Value, json};

/// How to run plans: `--backend`, steps, limits, write-back.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// Where to run: cuda (the GPUs, one process each) or cpu (threads standing for devices,
    /// priced with a cpu profile given by --calibration).
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// Timed steps (the median is reported).
    #[arg(
        long,
        default_value_t = RunArgs::STEPS,
        allow_negative_numbers = true,
        value_parser = super::args::size::<u32>,
    )]
    pub steps: u32,
    /// Untimed steps first.
    #[arg(
        long,
        default_value_t = RunArgs::WARMUP,
        allow_negative_numbers = true,
        value_parser = super::args::count::<u32>,
    )]
    pub warmup: u32,
    /// Store the measured GEMM and collective times in the calibration profile.
    #[arg(long = "write-back")]
    pub write_back: bool,
    /// cpu backend: memory all ranks may allocate together, GiB.
    #[arg(
        long = "cpu-memory-gib",
        default_value_t = RunArgs::CPU_MEMORY_GIB,
        allow_negative_numbers = true,
    )]
    pub cpu_memory_gib: f64,
    /// cpu backend: refuse runs predicted to take longer, seconds.
    #[arg(
        long = "time-limit-s",
        default_value_t = RunArgs::TIME_LIMIT_S,
        allow_negative_numbers = true,
    )]
    pub time_limit_s: f64,
}

/// `planner verify` arguments.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Model and cluster.
    #[command(flatten)]
    pub target: Target,
    /// The plan.
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Backend and steps.
    #[command(flatten)]
    pub run: RunArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

impl RunArgs {
    const STEPS: u32 = 3;
    const WARMUP: u32 = 1;
    const CPU_MEMORY_GIB: f64 = 8.0;
    const TIME_LIMIT_S: f64 = 600.0;

    /// The run flags given other than at their defaults: `suggest` refuses them without
    /// `--verify`, where they had been accepted and did nothing.
    pub fn given(&self) -> Vec<&'static str> {
        [
            (self.backend.is_some(), "--backend"),
            (self.steps != Self::STEPS, "--steps"),
            (self.warmup != Self::WARMUP, "--warmup"),
            (self.write_back, "--write-back"),
            (
                self.cpu_memory_gib != Self::CPU_MEMORY_GIB,
                "--cpu-memory-gib",
            ),
            (self.time_limit_s != Self::TIME_LIMIT_S, "--time-limit-s"),
        ]
        .into_iter()
        .filter_map(|(given, flag)| given.then_some(flag))
        .collect()
    }

    fn config(&self) -> Result<(BackendArg, RunConfig, CpuLimits), CliError> {
        let backend = self.backend.ok_or_else(|| {
            CliError::BadInput(
                "give --backend cuda (the GPUs) or --backend cpu (threads standing for devices)"
                    .into(),
            )
        })?;
        if self.steps == 0 || self.steps > 1000 {
            return Err(CliError::BadInput(format!(
                "--steps {}: give 1 to 1000 timed steps",
                self.steps
            )));
        }
        // Refused like --steps, not capped silently at 100 as it had been.
        if self.warmup > 100 {
            return Err(CliError::BadInput(format!(
                "--warmup {}: give 0 to 100 untimed steps",
                self.warmup
            )));
        }
        // Absurd values are named as the flag here, not as the cpu stand-in device's memory
        // (each rank's share of the total) that a device table would refuse: 1 PiB in all.
        for (name, v, max) in [
            ("--cpu-memory-gib", self.cpu_memory_gib, 1048576.0),
            ("--time-limit-s", self.time_limit_s, 1e6),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= max) {
                return Err(CliError::BadInput(format!(
                    "{name} {v}: give a positive number up to {max}"
                )));
            }
        }
        let cfg = RunConfig {
            warmup: self.warmup,
            steps: self.steps,
        };
        let limits = CpuLimits {
            memory_gib: self.cpu_memory_gib,
            time_s: self.time_limit_s,
        };
        Ok((backend, cfg, limits))
    }
}

/// One plan verified, with what it needs for output.
pub struct Outcome {
    /// The comparison.
    pub v: Verification,
    /// The run.
    pub run: RunResult,
}

/// Verifies `plan` on the backend `run` names: `None` on ranks other than 0 of a
/// multi-process cuda job.
pub fn verify_one(
    target: &Target,
    r: &Resolved,
    plan: &Plan,
    run: &RunArgs,
) -> Result<Option<Outcome>, CliError> {
    let (backend, cfg, limits) = run.config()?;
    let bar = render::progress_bar();
    let mut tick = |p: Progress| render::show(&bar, p);
    let out = match backend {
        BackendArg::Cpu => {
            let profile = r.profile.as_ref().ok_or_else(|| {
                CliError::BadInput(
                    "--backend cpu is priced with a cpu profile: run `planner calibrate \
                     --backend cpu --cluster C --devices N --out calibrate/NAME` and pass \
                     --calibration calibrate/NAME"
                        .into(),
                )
            })?;
            let (v, run) = verify::verify_cpu(&r.model, plan, profile, cfg, &limits, &mut tick)?;
            Some(Outcome { v, run })
        }
        BackendArg::Cuda => super::verify_cuda::verify(target, r, plan, cfg, &mut tick)?,
    };
    bar.finish_and_clear();
    Ok(out)
}

/// Stores `o`'s measured kernels in the profile the target names (atomic write).
fn write_back(target: &Target, r: &Resolved, o: &Outcome) -> Result<WriteBack, CliError> {
    let name = target
        .src
        .calibration
        .clone()
        .or_else(|| r.cluster.calibration.clone())
        .ok_or_else(|| {
            CliError::BadInput(
                "--write-back needs a profile to update: pass --calibration NAME|PATH".into(),
            )
        })?;
    let path = crate::calib::profile_path(&name)?;
    let mut p = crate::calib::load_profile(&name)?;
    let wb = verify::write_back(
        &mut p,
        &o.run,
        o.v.estimate.plan.dtype,
        &o.v.estimate.plan.short(),
    );
    p.save_file(&path)?;
    eprintln!(
        "wrote {} GEMM and {} collective points into {}",
        wb.gemm_points,
        wb.collective_points,
        path.display()
    );
    Ok(wb)
}

/// Runs `planner verify`.
pub fn run(a: VerifyArgs) -> Result<String, CliError> {
    let r = a
        .target
        .resolve_for(a.run.backend == Some(BackendArg::Cpu))?;
    let plan = a.plan.resolve(&r.model, &r.cluster)?;
    let Some(o) = verify_one(&a.target, &r, &plan, &a.run)? else {
        return Ok(String::new());
    };
    let wb = if a.run.write_back {
        Some(write_back(&a.target, &r, &o)?)
    } else {
        None
    };
    Ok(match a.format {
        Format::Json => json(&to_json(&o.v, &r, wb.as_ref())),
        Format::Csv => render::csv(
            &["class", "predicted_s", "measured_s", "error"],
            rows(&o.v, |s| format!("{s:.6}")),
        ),
        Format::Table => table(&o.v, &r),
    })
}

use crate::units::fmt_signed_pct as pct;

/// The step and class rows: name, predicted, measured (seconds written by `secs`), error.
fn rows(v: &Verification, secs: impl Fn(f64) -> String) -> Vec<Vec<String>> {
    let mut out = vec![vec![
        "step_time_s".to_string(),
        secs(v.estimate.step_time_s),
        secs(v.measured.step_time_s),
        pct(Some(v.error.step_time)),
    ]];
    for ((name, p), ((_, m), (_, e))) in v
        .predicted
        .rows()
        .iter()
        .zip(v.measured.classes.rows().iter().zip(&v.error.classes))
    {
        if *p > 0.0 || *m > 0.0 {
            out.push(vec![
                name.to_string(),
                secs(*p),
                secs(*m),
                class_error(*p, *e),
            ]);
        }
    }
    out
}

/// A class's error cell: the relative error, or `unpredicted` where the prediction has none
/// of the class and the run some (a −100% would read as a prediction that was all wrong,
/// where e.g. a TP collective's wait for a slower peer counts as bubble, which a plan
/// without pipelining predicts none of).
fn class_error(predicted: f64, error: Option<f64>) -> String {
    // Under a nanosecond is a rounding residue of the breakdown's differences (a bubble of
    // 2.8e-17 s had read −100%), not a prediction.
    if predicted.abs() < 1e-9 && error.is_some() {
        "unpredicted".to_string()
    } else {
        pct(error)
    }
}

fn table(v: &Verification, r: &Resolved) -> String {
    let m = &v.measured;
    let rows: Vec<Vec<String>> = rows(v, fmt_secs)
        .into_iter()
        .map(|mut row| {
            row[0] = row[0].trim_end_matches("_s").replace('_', " ");
            row
        })
        .collect();
    let mut s = format!(
        "verify {} on {} ({} ranks): {}\n{} timed steps after warm-up; classes of rank {} \
         (the busiest by the prediction)\n\n{}\n\n",
        r.model.name,
        match v.backend {
            verify::BackendKind::Cpu => "cpu thread-devices".to_string(),
            verify::BackendKind::Cuda => r.cluster.gpu.name.clone(),
        },
        v.estimate.n_gpus,
        v.estimate.plan.short(),
        m.step_times_s.len(),
        m.rank,
        render::table(&["", "predicted", "measured", "error"], rows)
    );
    s += &format!(
        "step-to-step spread {:.1}%; wall time per step {}\n",
        100.0 * m.spread,
        fmt_secs(m.wall_step_time_s)
    );
    if let Some(h) = m.host_speed {
        s += &format!(
            "host speed around the run: {h:.2}× the calibration's (the plan's heaviest GEMM \
             shapes re-timed before and after; below 1: the cores ran slower, as when other work \
             shares them)\n"
        );
    }
    s += &format!(
        "peak memory (fullest rank): predicted {:.3} GiB, measured {:.3} GiB ({}); {}\n",
        m.memory.predicted_gib,
        m.memory.measured_gib,
        pct(v.error.peak_memory),
        m.memory.basis
    );
    s += &format!(
        "numbers from: {}\n",
        v.estimate.provenance.summary().join("; ")
    );
    for n in &v.notes {
        s += &format!("note: {n}\n");
    }
    s
}

fn classes_json(rows: &[(&'static str, f64)]) -> Value {
    Value::Object(
        rows.iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

/// The JSON contract of `planner verify --format json` (module doc).
pub fn to_json(v: &Verification, r: &Resolved, wb: Option<&WriteBack>) -> Value {
    let mut predicted = render::estimate_json(&v.estimate);
    predicted["classes"] = classes_json(&v.predicted.rows());
    predicted["peak_memory_gib"] = json!(v.measured.memory.predicted_gib);
    let m = &v.measured;
    let errors = Value::Object(
        v.error
            .classes
            .iter()
            .map(|(k, e)| (k.to_string(), json!(e)))
            .collect(),
    );
    json!({
        "backend": v.backend,
        "model": r.model.name,
        "cluster": r.cluster.name,
        "device": match v.backend {
            verify::BackendKind::Cpu => "cpu thread-device".to_string(),
            verify::BackendKind::Cuda => r.cluster.gpu.name.clone(),
        },
        "n_devices": v.estimate.n_gpus,
        "plan": v.estimate.plan,
        "predicted": predicted,
        "measured": {
            "step_time_s": m.step_time_s,
            "step_times_s": m.step_times_s,
            "spread": m.spread,
            "wall_step_time_s": m.wall_step_time_s,
            "rank": m.rank,
            "classes": classes_json(&m.classes.rows()),
            "peak_memory_gib": m.memory.measured_gib,
            "memory_basis": m.memory.basis,
            "host_speed": m.host_speed,
        },
        "error": {
            "step_time": v.error.step_time,
            "classes": errors,
            "peak_memory": v.error.peak_memory,
        },
        "notes": v.notes,
        "write_back": wb,
    })
}

/// `suggest --verify K`: runs the top `k` plans, re-ranks them by measured step time, and
/// prints predicted and measured side by side with Spearman's ρ between the two orders.
pub fn suggest(
    target: &Target,
    r: &Resolved,
    top: &[Estimate],
    k: usize,
    run: &RunArgs,
    format: Format,
) -> Result<String, CliError> {
    let mut done = Vec::new();
    for (i, e) in top.iter().take(k).enumerate() {
        if !super::verify_cuda::quiet_rank() {
            eprintln!(
                "verifying plan {} of {}: {}",
                i + 1,
                k.min(top.len()),
                e.plan.short()
            );
        }
        if let Some(o) = verify_one(target, r, &e.plan, run)? {
            done.push((i, o.v));
        }
    }
    if done.is_empty() {
        return Ok(String::new());
    }
    let pred: Vec<f64> = done.iter().map(|(_, v)| v.estimate.step_time_s).collect();
    let meas: Vec<f64> = done.iter().map(|(_, v)| v.measured.step_time_s).collect();
    let rho = crate::validate::stats::spearman(&pred, &meas);
    done.sort_by(|a, b| {
        a.1.measured
            .step_time_s
            .total_cmp(&b.1.measured.step_time_s)
    });
    Ok(if format == Format::Json {
        let plans: Vec<Value> = done
            .iter()
            .enumerate()
            .map(|(i, (pi, v))| {
                json!({"measured_rank": i + 1, "predicted_rank": pi + 1, "plan": v.estimate.plan,
                    "predicted_step_time_s": v.estimate.step_time_s,
                    "measured_step_time_s": v.measured.step_time_s,
                    "spread": v.measured.spread, "error": v.error.step_time})
            })
            .collect();
        json(&json!({"verified": plans, "spearman_rho": rho}))
    } else {
        reranked_table(&done, rho, run.backend == Some(BackendArg::Cpu))
    })
}

/// The verified plans in measured order with their predicted rank, and ρ.
fn reranked_table(done: &[(usize, Verification)], rho: Option<f64>, cpu: bool) -> String {
    let rows = done
        .iter()
        .enumerate()
        .map(|(i, (pi, v))| {
            vec![
                (i + 1).to_string(),
                (pi + 1).to_string(),
                v.estimate.plan.short(),
                fmt_secs(v.estimate.step_time_s),
                fmt_secs(v.measured.step_time_s),
                pct(Some(v.error.step_time)),
                format!("{:.1}%", 100.0 * v.measured.spread),
            ]
        })
        .collect();
    let header = [
        "measured rank",
        "predicted rank",
        "plan",
        "predicted",
        "measured",
        "error",
        "spread",
    ];
    format!(
        "\nverified on the {} backend, re-ranked by measured step time\n\n{}\n\nSpearman ρ \
         (predicted vs measured order): {}\n",
        if cpu { "cpu" } else { "cuda" },
        render::table(&header, rows),
        rho.map_or("- (fewer than 3 plans)".into(), |x| format!("{x:.2}"))
    )
}

/// `suggest --verify` on the cpu searches the cores as `verify` prices them: the cluster
/// becomes the cpu description from the profile, with as many thread-devices as GPUs.
/// Checks `suggest --verify K`'s arguments before the search runs.
pub fn check_suggest(k: usize, run: &RunArgs) -> Result<(), CliError> {
    if k == 0 {
        return Err(CliError::BadInput(
            "--verify 0: give how many of the top plans to run, e.g. --verify 3".into(),
        ));
    }
    run.config().map(|_| ())
}

pub fn cpu_target(r: Resolved, run: &RunArgs) -> Result<Resolved, CliError> {
    if run.backend != Some(BackendArg::Cpu) {
        return Ok(r);
    }
    let p = r.profile.as_ref().ok_or_else(|| {
        CliError::BadInput("--backend cpu: pass --calibration with a cpu profile".into())
    })?;
    let p = exec::verify::cpu_profile(p);
    let cluster = exec::verify::cpu_cluster(
        &p,
        r.cluster.n_gpus(),
        run.cpu_memory_gib,
        r.model.head_dim(),
    )?;
    Ok(Resolved {
        cluster,
        profile: Some(p),
        ..r
    })
}

#[cfg(test)]
mod tests {
    use super::class_error;

    /// −100% only where something was predicted; a class the prediction has none of but the
    /// run shows is `unpredicted`; no measurement is `-`.
    #[test]
    fn a_class_predicted_at_zero_reads_unpredicted() {
        assert_eq!(class_error(0.0, Some(-1.0)), "unpredicted");
        assert_eq!(class_error(2.8e-17, Some(-1.0)), "unpredicted");
        assert_eq!(class_error(2e-3, Some(-1.0)), "-100.0%");
        assert_eq!(class_error(2e-3, Some(0.25)), "+25.0%");
        assert_eq!(class_error(0.0, None), "-");
    }
}
