//! `planner verify --backend cuda`: one process per GPU. Without a launcher, `verify` spawns
//! the other local ranks itself (`planner verify-rank --job FILE`, this process is rank 0, the
//! rendezvous listens on a free local port); under srun, mpirun or torchrun (RANK,
//! WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) every process runs its rank and rank 0
//! prints the comparison.

use super::args::Resolved;
use super::verify::Outcome;
use super::{CliError, Target};
use crate::cost::{Machine, estimate};
use crate::exec::rendezvous::{Env, Rendezvous};
use crate::exec::run::{RunConfig, RunResult};
use crate::exec::spawn::LocalRanks;
use crate::exec::verify::{BackendKind, compare, executable_plan};
use crate::exec::{ExecError, Progress, cuda, cuda_run, lower};
use crate::spec::Plan;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// How long ranks wait for each other to join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(600);

/// What a spawned rank needs to run its part: the target as given and the plan.
#[derive(Serialize, Deserialize)]
pub struct Job {
    target: Target,
    plan: Plan,
    warmup: u32,
    steps: u32,
}

fn unavailable(m: String) -> CliError {
    ExecError::Unavailable(m).into()
}

/// The number of local GPUs, or why there are none.
fn local_gpus() -> Result<u64, CliError> {
    if !cuda::driver_present() {
        return Err(unavailable(
            "no CUDA driver library (libcuda.so) on this machine: --backend cuda needs an NVIDIA \
             GPU and its driver; use --backend cpu with a cpu profile to verify on the cores"
                .into(),
        ));
    }
    if !cuda::cublas_present() {
        return Err(unavailable(
            "cuBLAS (libcublas.so.12) not found: install the CUDA toolkit or the \
             nvidia-cublas-cu12 wheel and add its lib folder to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let n = cudarc::driver::CudaContext::device_count()
        .map_err(|e| unavailable(format!("the CUDA driver found no usable GPU ({e:?})")))?;
    if n < 1 {
        return Err(unavailable("the CUDA driver reports no GPU".into()));
    }
    Ok(n as u64)
}

/// Verifies `plan` on GPUs: `None` on ranks other than 0 of a multi-process job.
pub fn verify(
    target: &Target,
    r: &Resolved,
    plan: &Plan,
    cfg: RunConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Option<Outcome>, CliError> {
    let gpus = local_gpus()?;
    let world = plan.n_gpus();
    if world > 1 && !cuda::nccl_present() {
        return Err(unavailable(
            "NCCL not found: cudarc loads `libnccl.so`, while the nvidia-nccl-cu12 wheel and \
             distribution packages install `libnccl.so.2`; link one to the other in a folder on \
             LD_LIBRARY_PATH (calibrate/verify-gpu.sh does)"
                .into(),
        ));
    }
    let (plan, notes) = executable_plan(plan)?;
    let mut cluster = r.cluster.clone();
    crate::exec::verify::run_serially(&mut cluster);
    let m = Machine {
        cluster: &cluster,
        profile: r.profile.as_ref(),
    };
    let est = estimate(&r.model, &cluster, &plan, r.profile.as_ref());
    let lowered = lower::lower(&r.model, &plan, &m).map_err(CliError::Sim)?;
    let env = Env::from_vars(|k| std::env::var(k).ok())?;
    let run: Option<RunResult> = match env {
        Some(env) => {
            if env.world != world {
                return Err(CliError::BadInput(format!(
                    "WORLD_SIZE={} but the plan needs dp·tp·pp·cp = {world} processes, one per \
                     GPU: launch {world} processes",
                    env.world
                )));
            }
            let local = std::env::var("LOCAL_RANK")
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(env.rank % gpus);
            let rdv = Rendezvous::join(&env, JOIN_TIMEOUT)?;
            cuda_run::run(
                &lowered,
                env.rank,
                local as usize,
                plan.dtype,
                Some(rdv),
                cfg,
                progress,
            )?
        }
        None if world == 1 => cuda_run::run(&lowered, 0, 0, plan.dtype, None, cfg, progress)?,
        None => spawn_and_run(target, &plan, cfg, gpus, &lowered, progress)?,
    };
    Ok(run.map(|run| Outcome {
        v: compare(BackendKind::Cuda, &est, &lowered, &run, notes),
        run,
    }))
}

/// Rank 0 of a job on this node's GPUs: starts ranks 1.. as `planner verify-rank --job FILE`
/// (`exec::spawn`), runs its own rank, and waits for them (stopping them if it failed).
fn spawn_and_run(
    target: &Target,
    plan: &Plan,
    cfg: RunConfig,
    gpus: u64,
    lowered: &lower::Lowered,
    progress: &mut dyn FnMut(Progress),
) -> Result<Option<RunResult>, CliError> {
    let world = plan.n_gpus();
    if gpus < world {
        return Err(unavailable(format!(
            "the plan needs {world} GPUs and this node has {gpus}: run it across nodes under a \
             launcher (srun, mpirun or torchrun setting RANK, WORLD_SIZE, LOCAL_RANK, \
             MASTER_ADDR and MASTER_PORT; one process per GPU), or verify a plan of at most \
             {gpus} GPUs"
        )));
    }
    let job = Job {
        target: target.clone(),
        plan: plan.clone(),
        warmup: cfg.warmup,
        steps: cfg.steps,
    };
    let path = std::env::temp_dir().join(format!("planner-verify-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec(&job).expect("jobs serialise"))?;
    let args = [
        "verify-rank".into(),
        "--job".into(),
        path.clone().into_os_string(),
    ];
    let out = LocalRanks::start(&args, world).and_then(|(ranks, listener)| {
        let run = Rendezvous::serve(listener, world, JOIN_TIMEOUT)
            .and_then(|rdv| cuda_run::run(lowered, 0, 0, plan.dtype, Some(rdv), cfg, progress));
        let waited = ranks.finish(run.is_err());
        let run = run?;
        waited.map(|_| run)
    });
    let _ = std::fs::remove_file(&path);
    Ok(out?)
}

/// `planner verify-rank --job FILE`: one spawned rank (hidden; `verify` starts it).
pub fn run_rank(job: &Path) -> Result<String, CliError> {
    let text = std::fs::read(job)?;
    let job: Job = serde_json::from_slice(&text)
        .map_err(|e| CliError::BadInput(format!("{}: not a verify job: {e}", job.display())))?;
    let target = job.target;
    let r = target.resolve()?;
    let cfg = RunConfig {
        warmup: job.warmup,
        steps: job.steps,
    };
    verify(&target, &r, &job.plan, cfg, &mut |_| {})?;
    Ok(String::new())
}

/// Whether this process is a rank other than 0 of a launched job (it prints nothing).
pub fn quiet_rank() -> bool {
    std::env::var("RANK").is_ok_and(|r| r.trim() != "0")
}
