//! The pipeline simulator (DESIGN.md §5): a deterministic discrete-event simulation of GPipe,
//! 1F1B and interleaved 1F1B over the cost model's per-stage operator costs, with a compute,
//! a point-to-point and a data-parallel stream per rank. It returns step time, bubble
//! fraction, each stage's busy/idle time and peak memory, and a Chrome trace. Pure: no IO.

mod engine;
mod rerank;
pub mod schedule;
pub mod trace;

pub use rerank::{Rerank, Resimulated, rerank};
pub use schedule::{Pass, Task};
pub use trace::Trace;

use crate::calib::Profile;
use crate::cost::stages::{GradSync, StageWork};
use crate::cost::{Estimate, Machine, PricedGraphs, estimate_with_work, memory};
use crate::spec::{ClusterSpec, ModelSpec, Plan, Schedule};
use crate::units::GIB;
use serde::Serialize;

/// Why a simulation could not run.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SimError {
    /// The plan fails its structural checks.
    #[error("the plan cannot run: {0}")]
    Infeasible(String),
    /// Megatron's interleaved schedule needs whole groups of p micro-batches.
    #[error(
        "interleaved schedule needs micro-batches ({n_micro}) to be a multiple of pp={pp}; \
         change --global-batch, --micro-batch or --dp"
    )]
    InterleavedMicroBatches {
        /// Micro-batches.
        n_micro: u64,
        /// Pipeline stages.
        pp: u64,
    },
    /// Stages hold different numbers of chunks, or several without interleaving.
    #[error("stages must all hold {expected} model chunk(s); stage {stage} holds {found}")]
    Chunks {
        /// Stage at fault.
        stage: u64,
        /// Chunks it holds.
        found: usize,
        /// Chunks expected.
        expected: usize,
    },
    /// A schedule waited forever (a bug in a schedule, never a user error).
    #[error("the schedule stalled on stage {stage} before {task:?}")]
    Stalled {
        /// Stage that could not proceed.
        stage: u64,
        /// The task it waited to start.
        task: Task,
    },
}

/// What the simulator schedules: each stage's work, the schedule and the framework options.
#[derive(Clone, Copy, Debug)]
pub struct Pipeline<'a> {
    /// Per-stage work (from [`stage_work`](crate::cost::stages::stage_work)), all with the same number of chunks.
    pub stages: &'a [StageWork],
    /// Pipeline schedule.
    pub schedule: Schedule,
    /// Micro-batches per step.
    pub n_micro: u64,
    /// When each stage issues its gradient reduction: after the pipeline drains, with each
    /// chunk's last backward (`--overlap-grad-reduce`), or as Megatron-LM aligns it across
    /// the pipeline ([`stages::grad_sync`](crate::cost::stages::grad_sync)).
    pub grad_sync: GradSync,
}

/// One stage over the simulated step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageSim {
    /// Stage index.
    pub stage_idx: u64,
    /// Seconds the compute stream runs passes (TP/CP/EP collectives included) and the
    /// optimizer step.
    pub busy_s: f64,
    /// Seconds the compute stream waits on its own pipeline sends.
    pub p2p_s: f64,
    /// Seconds the compute stream has nothing to run: step − busy − p2p.
    pub idle_s: f64,
    /// Seconds the data-parallel stream is busy (gradient reduction, ZeRO-3 gathers).
    pub dp_comm_s: f64,
    /// Most micro-batches whose activations the stage held at once, in stages' worth
    /// (chunks / v): comparable to `cost::memory::in_flight_chunks`.
    pub peak_in_flight: f64,
    /// Most activation bytes held at once.
    pub peak_activation_bytes: f64,
    /// Peak memory of one rank, GiB: the closed form's static part plus the simulated
    /// activation peak (with its allocator share).
    pub peak_memory_gib: f64,
}

/// A simulated training step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Simulation {
    /// Schedule simulated.
    pub schedule: Schedule,
    /// Micro-batches.
    pub n_micro: u64,
    /// Model chunks per stage.
    pub vpp: u64,
    /// Seconds from the first forward to the end of the optimizer step.
    pub step_time_s: f64,
    /// Seconds until the last backward (and its send) ends on every stage.
    pub pipeline_s: f64,
    /// Share of the pipeline phase the busiest stage's compute stream sits idle: fill and
    /// drain, (p − 1)/(m + p − 1) for uniform 1F1B; comparable to the closed form's bubble.
    pub bubble_fraction: f64,
    /// Share of the pipeline phase the average stage sits idle: fill, drain and waiting on
    /// slower stages.
    pub mean_idle_fraction: f64,
    /// Gradient reduction past the pipeline phase, until the optimizer can start.
    pub dp_exposed_s: f64,
    /// The slowest stage's optimizer step.
    pub optimizer_s: f64,
    /// Per stage.
    pub stages: Vec<StageSim>,
    /// The timeline, when asked for.
    #[serde(skip)]
    pub trace: Option<Trace>,
}

impl Simulation {
    /// The busiest stage's bubble as a share of the whole step, as the closed form's is
    /// (`bubble_fraction` is a share of the pipeline phase, before the gradient reduction and
    /// the optimizer).
    pub fn bubble_share_of_step(&self) -> f64 {
        self.bubble_fraction * self.pipeline_s / self.step_time_s.max(f64::MIN_POSITIVE)
    }

    /// The fullest stage's peak memory, GiB.
    pub fn peak_memory_gib(&self) -> f64 {
        self.stages
            .iter()
            .map(|s| s.peak_memory_gib)
            .fold(0.0, f64::max)
    }
}

/// Simulates one step of `pipe`; with `trace`, also records the timeline.
pub fn simulate(pipe: &Pipeline, trace: bool) -> Result<Simulation, SimError> {
    let v = pipe.stages.first().map_or(1, |s| s.chunks.len());
    let expected = if pipe.schedule == Schedule::Interleaved {
        v
    } else {
        1
    };
    if let Some(s) = pipe.stages.iter().find(|s| s.chunks.len() != expected) {
        return Err(SimError::Chunks {
            stage: s.stage_idx,
            found: s.chunks.len(),
            expected,
        });
    }
    engine::run(pipe, trace)
}

/// The static part of a stage's memory (everything but saved activations and their
/// allocator share), plus `act` activation bytes.
fn memory_with(closed_form: &memory::MemoryBytes, act: f64) -> f64 {
    let share = 1.0 + memory::ALLOCATOR_FRAGMENTATION;
    closed_form.total() + share * (act - closed_form.activations)
}

/// A plan priced both ways.
#[derive(Clone, Debug)]
pub struct PlanSim {
    /// The closed-form estimate.
    pub estimate: Estimate,
    /// The simulation.
    pub sim: Simulation,
    /// The closed form's gradient reduction past the pipeline ([`dp_exposed_s`]), the part
    /// of its `dp_comm_s` the simulation's `dp_exposed_s` compares with (ZeRO-3's gathers
    /// and reduce-scatters run inside the pipeline).
    ///
    /// [`dp_exposed_s`]: crate::cost::stages::dp_exposed_s
    pub closed_form_dp_exposed_s: f64,
}

/// Prices `plan` with the closed form and simulates it (same priced graphs for both).
pub fn simulate_plan(
    model: &ModelSpec,
    cluster: &ClusterSpec,
    profile: Option<&Profile>,
    plan: &Plan,
    trace: bool,
) -> Result<PlanSim, SimError> {
    let why = plan.check(model, cluster);
    if !why.is_empty() {
        let all: Vec<String> = why
            .iter()
            .map(|w| format!("`{}`: {w}", w.field()))
            .collect();
        return Err(SimError::Infeasible(all.join("; ")));
    }
    let m = Machine { cluster, profile };
    let pg = PricedGraphs::new(model, plan, &m);
    let (estimate, work) = estimate_with_work(model, plan, &m, &pg);
    let sim = simulate(
        &Pipeline {
            stages: &work,
            schedule: plan.schedule,
            n_micro: plan.n_micro(),
            grad_sync: crate::cost::stages::grad_sync(plan),
        },
        trace,
    )?;
    Ok(PlanSim {
        closed_form_dp_exposed_s: crate::cost::stages::dp_exposed_s(plan, &work),
        estimate,
        sim,
    })
}

impl StageSim {
    /// Peak activations in GiB.
    pub fn peak_activations_gib(&self) -> f64 {
        self.peak_activation_bytes / GIB
    }
}

#[cfg(test)]
mod tests;
