//! The event loop: per-rank compute, point-to-point and data-parallel streams advanced by a
//! closed set of events in time order (ties broken by insertion order, so runs repeat
//! exactly).
//!
//! Model (Megatron-LM without `overlap_p2p_comm`): a rank runs its schedule's passes in
//! order on its compute stream; TP/CP/EP collectives sit inside a pass, as the cost model
//! prices them. After a pass the rank sends its output (activations forward, gradients
//! backward) and waits for the send; the receiver's pass can start once the data has
//! arrived. Gradient reduction runs on the data-parallel stream, after the rank's last
//! backward, from the start of each chunk's last backward, or where Megatron-LM's aligned
//! grad sync issues it ([`GradSync`]).
//! The optimizer step starts on every rank once every rank has reduced (its gradient-norm
//! all-reduce spans all stages).

use super::schedule::{self, Pass, Task};
use super::trace::{Slice, Stream, Trace};
use super::{Pipeline, SimError, Simulation, StageSim, memory_with};
use crate::cost::stages::{ChunkWork, GradSync};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Everything that can happen.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// The input of task `pos` of `stage` arrived (or is local).
    Arrive { stage: usize, pos: usize },
    /// The stage's compute stream finished its current task and the task's send.
    Free { stage: usize },
    /// The stage's gradients are reduced.
    Reduced,
    /// Every stage has reduced: run the optimizer step.
    Optimizer,
}

struct Queued {
    t: f64,
    seq: u64,
    ev: Event,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    /// Earliest first, then first pushed (BinaryHeap is a max-heap).
    fn cmp(&self, o: &Self) -> Ordering {
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

/// One pipeline rank's state.
struct Rank {
    order: Vec<Task>,
    /// Position of each task in `order`, indexed by [`Engine::slot`].
    pos: Vec<usize>,
    /// When each task's input arrived (infinite until it has).
    ready: Vec<f64>,
    next: usize,
    running: bool,
    /// Position of the last backward of each chunk.
    last_bwd: Vec<usize>,
    /// Under [`GradSync::Aligned`], the position of the backward after which each chunk's
    /// reduction is issued (`None`: once the stage is done).
    sync_after: Vec<Option<usize>>,
    /// Whether each chunk's reduction has been issued.
    issued: Vec<bool>,
    /// When each issued step reduction runs on the data-parallel stream (ZeRO collectives,
    /// priced inside their passes, are not in it).
    reductions: Vec<(f64, f64)>,
    act: f64,
    in_flight: u32,
    peak_act: f64,
    peak_in_flight: u32,
    busy_s: f64,
    send_s: f64,
    dp_s: f64,
    dp_free: f64,
    drained: f64,
}

struct Engine<'a> {
    pipe: &'a Pipeline<'a>,
    p: usize,
    v: usize,
    m: usize,
    ranks: Vec<Rank>,
    reduced: usize,
    barrier: f64,
    step_end: f64,
    trace: Option<Trace>,
}

/// Simulates `pipe` to the end of the optimizer step.
pub fn run(pipe: &Pipeline, trace: bool) -> Result<Simulation, SimError> {
    let mut e = Engine::new(pipe, trace)?;
    let mut queue = BinaryHeap::new();
    let mut seq = 0;
    let mut push = |q: &mut BinaryHeap<Queued>, (t, ev): (f64, Event)| {
        q.push(Queued { t, seq, ev });
        seq += 1;
    };
    for x in e.initial() {
        push(&mut queue, x);
    }
    while let Some(Queued { t, ev, .. }) = queue.pop() {
        for x in e.handle(t, ev) {
            push(&mut queue, x);
        }
    }
    e.finish()
}

impl<'a> Engine<'a> {
    fn new(pipe: &'a Pipeline<'a>, trace: bool) -> Result<Engine<'a>, SimError> {
        let (p, m) = (pipe.stages.len(), pipe.n_micro as usize);
        let v = pipe.stages.first().map_or(1, |s| s.chunks.len());
        let mut ranks = Vec::with_capacity(p);
        for i in 0..p {
            let order = schedule::order(pipe.schedule, p as u64, i as u64, m as u64, v as u64)?;
            let mut pos = vec![0; 2 * v * m];
            let mut last_bwd = vec![0; v];
            let mut bwds = Vec::with_capacity(v * m);
            for (k, t) in order.iter().enumerate() {
                pos[slot(v, m, t)] = k;
                if t.pass == Pass::Bwd {
                    last_bwd[t.chunk as usize] = k;
                    bwds.push(k);
                }
            }
            // Megatron-LM issues chunk c's reduction after the backward `rank` steps past the
            // chunk's last one (`cost::stages::GradSync::Aligned`).
            let sync_after = last_bwd
                .iter()
                .map(|&l| {
                    let ord = bwds.iter().position(|&k| k == l).unwrap_or(0);
                    bwds.get(ord + i).copied()
                })
                .collect();
            ranks.push(Rank {
                ready: vec![f64::INFINITY; order.len()],
                order,
                pos,
                next: 0,
                running: false,
                last_bwd,
                sync_after,
                issued: vec![false; v],
                reductions: Vec::new(),
                act: 0.0,
                in_flight: 0,
                peak_act: 0.0,
                peak_in_flight: 0,
                busy_s: 0.0,
                send_s: 0.0,
                dp_s: 0.0,
                dp_free: 0.0,
                drained: 0.0,
            });
        }
        Ok(Engine {
            pipe,
            p,
            v,
            m,
            ranks,
            reduced: 0,
            barrier: 0.0,
            step_end: 0.0,
            trace: trace.then(|| Trace::new(p)),
        })
    }

    /// Inputs present at the start: the data loader's micro-batches on the first stage,
    /// and the loss on the last (its backward waits only for its own forward, before it in
    /// the order).
    fn initial(&self) -> Vec<(f64, Event)> {
        let (p, v) = (self.p, self.v as u32);
        let mut out = Vec::with_capacity(2 * self.m);
        for mb in 0..self.m as u32 {
            for (stage, t) in [(0, Task::fwd(0, mb)), (p - 1, Task::bwd(v - 1, mb))] {
                let pos = self.ranks[stage].pos[slot(self.v, self.m, &t)];
                out.push((0.0, Event::Arrive { stage, pos }));
            }
        }
        if self.m == 0 {
            out.extend((0..p).map(|stage| (0.0, Event::Free { stage })));
        }
        out
    }

    /// The one state transition per event.
    fn handle(&mut self, t: f64, ev: Event) -> Vec<(f64, Event)> {
        match ev {
            Event::Arrive { stage, pos } => {
                self.ranks[stage].ready[pos] = t;
                self.try_start(stage, t)
            }
            Event::Free { stage } => {
                let r = &mut self.ranks[stage];
                if r.running {
                    r.running = false;
                    r.next += 1;
                }
                if r.next == r.order.len() {
                    self.drained(stage, t)
                } else {
                    self.try_start(stage, t)
                }
            }
            Event::Reduced => {
                self.reduced += 1;
                self.barrier = self.barrier.max(t);
                if self.reduced == self.p {
                    vec![(self.barrier, Event::Optimizer)]
                } else {
                    vec![]
                }
            }
            Event::Optimizer => {
                self.optimizer(t);
                vec![]
            }
        }
    }

    /// Starts the stage's next task if the stream is free and its input is there.
    fn try_start(&mut self, stage: usize, t: f64) -> Vec<(f64, Event)> {
        let r = &mut self.ranks[stage];
        if r.running || r.next >= r.order.len() || r.ready[r.next] > t {
            return vec![];
        }
        r.running = true;
        let task = r.order[r.next];
        let stages = self.pipe.stages;
        let work = &stages[stage].chunks[task.chunk as usize];
        let end = match task.pass {
            Pass::Fwd => self.forward(stage, task, work, t),
            Pass::Bwd => self.backward(stage, task, work, t),
        };
        self.send(stage, task, end)
    }

    /// Runs a forward on the compute stream: its activations stay until its backward.
    fn forward(&mut self, stage: usize, task: Task, w: &ChunkWork, t: f64) -> f64 {
        let segments = [
            ("forward", w.fwd.compute_s),
            ("tp collectives", w.fwd.tp_s),
            ("cp/ep collectives", w.fwd.other_s),
            ("zero gather wait", w.zero_fwd_exposed_s()),
        ];
        let end = self.compute(stage, task, t, &segments);
        self.zero_comm(stage, task, t, &[("zero all-gather", w.zero_gather_fwd_s)]);
        let r = &mut self.ranks[stage];
        r.act += w.activation_bytes;
        r.in_flight += 1;
        r.peak_act = r.peak_act.max(r.act);
        r.peak_in_flight = r.peak_in_flight.max(r.in_flight);
        let act = r.act;
        if let Some(tr) = &mut self.trace {
            tr.memory(stage, t, act);
        }
        end
    }

    /// Runs recomputation and a backward; frees the micro-batch's activations at its end and
    /// starts the chunk's gradient reduction with its last backward when overlapping.
    fn backward(&mut self, stage: usize, task: Task, w: &ChunkWork, t: f64) -> f64 {
        let segments = [
            ("recompute", w.recompute.total()),
            ("backward", w.bwd.compute_s),
            ("tp collectives", w.bwd.tp_s),
            ("cp/ep collectives", w.bwd.other_s),
            ("zero gather/reduce wait", w.zero_bwd_exposed_s()),
        ];
        let mut end = self.compute(stage, task, t, &segments);
        let z3 = [
            ("zero all-gather", w.zero_gather_bwd_s),
            ("zero reduce-scatter", w.zero_reduce_s),
        ];
        self.zero_comm(stage, task, t, &z3);
        let r = &self.ranks[stage];
        let last = r.last_bwd[task.chunk as usize] == r.next;
        let with_last = self.with_last_backward(stage);
        // The chunk's gradient reduction starts with its last backward where the framework
        // issues it so (its buckets fill as the backward runs).
        let reduce = with_last && last && w.dp_reduce_s > 0.0;
        let start = t.max(r.dp_free);
        if reduce {
            let r = &mut self.ranks[stage];
            r.reductions.push((start, start + w.dp_reduce_s));
        }
        // Every step reduction in flight slows this backward by the interference over the
        // time it runs beside it (`stages::dp_exposed_s`).
        let beside: f64 = self.ranks[stage]
            .reductions
            .iter()
            .map(|&(a, b)| (end.min(b) - t.max(a)).max(0.0))
            .sum();
        if beside > 0.0 {
            let slowed = [("overlap interference", w.overlap_interference * beside)];
            end = self.compute(stage, task, end, &slowed);
        }
        let r = &mut self.ranks[stage];
        r.act -= w.activation_bytes;
        r.in_flight -= 1;
        let act = r.act;
        if let Some(tr) = &mut self.trace {
            tr.memory(stage, end, act.max(0.0));
        }
        if reduce {
            let r = &mut self.ranks[stage];
            // Buckets reduce as the backward produces them: not done before it ends.
            let done = (start + w.dp_reduce_s).max(end);
            r.dp_free = done;
            r.dp_s += done - start;
            if let Some(last) = r.reductions.last_mut() {
                last.1 = done;
            }
            let s = Slice::new(stage, Stream::Dp, "dp grad reduce", start, done - start);
            self.record(s.task(task));
        } else if self.pipe.grad_sync == GradSync::Aligned && !with_last {
            let here = self.ranks[stage].next;
            for c in 0..self.v {
                if self.ranks[stage].sync_after[c] == Some(here) {
                    self.issue_reduction(stage, c, end);
                }
            }
        }
        end
    }

    /// Whether `stage` reduces each chunk's gradients beside that chunk's last backward:
    /// [`GradSync::WithLastBackward`], and Megatron-LM's aligned sync on stage 0 of a pipeline
    /// without interleaving.
    fn with_last_backward(&self, stage: usize) -> bool {
        match self.pipe.grad_sync {
            GradSync::WithLastBackward => true,
            GradSync::Aligned => stage == 0 && self.v == 1,
            GradSync::AfterDrain => false,
        }
    }

    /// Issues chunk `c`'s reduction on `stage`'s data-parallel stream at `t` (once).
    fn issue_reduction(&mut self, stage: usize, c: usize, t: f64) {
        let d = self.pipe.stages[stage].chunks[c].dp_reduce_s;
        let r = &mut self.ranks[stage];
        if std::mem::replace(&mut r.issued[c], true) || d <= 0.0 {
            return;
        }
        let start = t.max(r.dp_free);
        r.dp_free = start + d;
        r.dp_s += d;
        r.reductions.push((start, start + d));
        self.record(Slice::new(stage, Stream::Dp, "dp grad reduce", start, d));
    }

    /// Lays `segments` end to end on the compute stream from `t`; returns the end.
    fn compute(
        &mut self,
        stage: usize,
        task: Task,
        t: f64,
        segments: &[(&'static str, f64)],
    ) -> f64 {
        let mut at = t;
        for &(name, d) in segments {
            if d > 0.0 {
                self.record(Slice::new(stage, Stream::Compute, name, at, d).task(task));
                at += d;
            }
        }
        self.ranks[stage].busy_s += at - t;
        at
    }

    /// ZeRO-2/3 collectives issued with a pass, on the data-parallel stream.
    fn zero_comm(&mut self, stage: usize, task: Task, t: f64, ops: &[(&'static str, f64)]) {
        for &(name, d) in ops {
            if d > 0.0 {
                let r = &mut self.ranks[stage];
                let start = t.max(r.dp_free);
                r.dp_free = start + d;
                r.dp_s += d;
                self.record(Slice::new(stage, Stream::Dp, name, start, d).task(task));
            }
        }
    }

    /// Sends the output of `task` (ended at `end`) to the stage that consumes it, holding
    /// the compute stream until the send completes; frees the stream.
    fn send(&mut self, stage: usize, task: Task, end: f64) -> Vec<(f64, Event)> {
        let (p, v) = (self.p, self.v);
        // Virtual stage: chunk c of stage i is stage c·p + i of a p·v-stage pipeline.
        let vs = task.chunk as usize * p + stage;
        let to = match task.pass {
            Pass::Fwd if vs + 1 < p * v => {
                Some((vs + 1, Task::fwd(((vs + 1) / p) as u32, task.mb)))
            }
            Pass::Bwd if vs > 0 => Some((vs - 1, Task::bwd(((vs - 1) / p) as u32, task.mb))),
            _ => None,
        };
        let Some((to_vs, next)) = to else {
            return vec![(end, Event::Free { stage })];
        };
        let to_stage = to_vs % p;
        let d = self.pipe.stages[stage].p2p_s;
        self.ranks[stage].send_s += d;
        if d > 0.0 {
            let name = match task.pass {
                Pass::Fwd => "send activations",
                Pass::Bwd => "send gradients",
            };
            let s = Slice::new(stage, Stream::P2p, name, end, d).task(task);
            self.record(s.peer(to_stage));
        }
        let pos = self.ranks[to_stage].pos[slot(v, self.m, &next)];
        vec![
            (end + d, Event::Free { stage }),
            (
                end + d,
                Event::Arrive {
                    stage: to_stage,
                    pos,
                },
            ),
        ]
    }

    /// The stage ran its last task: reduce its gradients (what overlap left).
    fn drained(&mut self, stage: usize, t: f64) -> Vec<(f64, Event)> {
        let d = self.pipe.stages[stage].dp_reduce_s;
        let r = &mut self.ranks[stage];
        r.drained = t;
        if self.pipe.grad_sync == GradSync::Aligned && !self.with_last_backward(stage) {
            // "Launch any remaining grad reductions" once the schedule is done.
            for c in 0..self.v {
                self.issue_reduction(stage, c, t);
            }
        }
        let r = &mut self.ranks[stage];
        if self.pipe.grad_sync != GradSync::AfterDrain {
            return vec![(t.max(r.dp_free), Event::Reduced)];
        }
        let start = t.max(r.dp_free);
        r.dp_free = start + d;
        r.dp_s += d;
        if d > 0.0 {
            self.record(Slice::new(stage, Stream::Dp, "dp grad reduce", start, d));
        }
        vec![(start + d, Event::Reduced)]
    }

    fn optimizer(&mut self, t: f64) {
        for stage in 0..self.p {
            let d = self.pipe.stages[stage].optimizer_s;
            self.ranks[stage].busy_s += d;
            self.step_end = self.step_end.max(t + d);
            if d > 0.0 {
                self.record(Slice::new(stage, Stream::Compute, "optimizer step", t, d));
            }
        }
        self.step_end = self.step_end.max(t);
    }

    fn record(&mut self, s: Slice) {
        if let Some(tr) = &mut self.trace {
            tr.slice(s);
        }
    }

    fn finish(self) -> Result<Simulation, SimError> {
        if let Some((i, r)) = self
            .ranks
            .iter()
            .enumerate()
            .find(|(_, r)| r.next < r.order.len())
        {
            return Err(SimError::Stalled {
                stage: i as u64,
                task: r.order[r.next],
            });
        }
        let step = self.step_end;
        let pipeline = self.ranks.iter().map(|r| r.drained).fold(0.0, f64::max);
        // Seconds each stage's compute stream works (passes and sends) in the pipeline phase.
        let mut working = Vec::with_capacity(self.p);
        let stages: Vec<StageSim> = self
            .ranks
            .iter()
            .zip(self.pipe.stages)
            .map(|(r, w)| {
                working.push(r.busy_s - w.optimizer_s + r.send_s);
                StageSim {
                    stage_idx: w.stage_idx,
                    busy_s: r.busy_s,
                    p2p_s: r.send_s,
                    idle_s: (step - r.busy_s - r.send_s).max(0.0),
                    dp_comm_s: r.dp_s,
                    peak_in_flight: r.peak_in_flight as f64 / self.v as f64,
                    peak_activation_bytes: r.peak_act,
                    peak_memory_gib: memory_with(&w.memory, r.peak_act) / crate::units::GIB,
                }
            })
            .collect();
        let opt = self
            .pipe
            .stages
            .iter()
            .map(|s| s.optimizer_s)
            .fold(0.0, f64::max);
        Ok(Simulation {
            schedule: self.pipe.schedule,
            n_micro: self.m as u64,
            vpp: self.v as u64,
            step_time_s: step,
            pipeline_s: pipeline,
            bubble_fraction: idle_share(working.iter().copied().fold(0.0, f64::max), pipeline),
            mean_idle_fraction: idle_share(working.iter().sum::<f64>() / self.p as f64, pipeline),
            dp_exposed_s: self.barrier - pipeline,
            optimizer_s: opt,
            stages,
            trace: self.trace.map(|t| t.finish(step)),
        })
    }
}

/// Share of `span` not spent `working`.
fn idle_share(working: f64, span: f64) -> f64 {
    if span > 0.0 {
        (1.0 - working / span).max(0.0)
    } else {
        0.0
    }
}

/// Index of a task in a rank's position table.
fn slot(v: usize, m: usize, t: &Task) -> usize {
    let pass = usize::from(t.pass == Pass::Bwd);
    (pass * v + t.chunk as usize) * m + t.mb as usize
}
