//! The calibration probes, independent of the backend: which GEMM shapes (the models' own, at
//! every tp shard and micro-batch the search uses, plus a grid), which copies, which
//! collectives at which sizes and group sizes; a time budget shared between them; and the
//! profile they make.

use super::{ExecError, Timing};
use crate::calib::{CollectiveFit, CollectivePoint, CopyPoint, GemmPoint, Meta, Profile, Span};
use crate::graph::{Coll, Kernel, ModelGraph, Shard};
use crate::spec::{AttentionImpl, ClusterSpec, ModelSpec};
use crate::units::{Dtype, MIB};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A device backend the probes run on.
pub trait Backend {
    /// Device name, library versions, device count.
    fn meta(&self) -> Meta;
    /// Devices in this node (GPUs, or threads standing for them).
    fn devices(&self) -> u64;
    /// Nodes in the job and this process's node (multi-node rendezvous), (1, 0) alone.
    fn nodes(&self) -> (u64, u64) {
        (1, 0)
    }
    /// GEMM data types this device runs.
    fn gemm_dtypes(&self) -> Vec<Dtype>;
    /// Whether every data type runs the same kernel (the cpu's f32 GEMM), so one measurement
    /// of a shape stands for all of them.
    fn one_gemm_for_all_dtypes(&self) -> bool {
        false
    }
    /// Largest A + B + C footprint in bytes a GEMM probe may take.
    fn max_gemm_bytes(&self) -> f64;
    /// Largest collective message to probe, bytes.
    fn max_message_bytes(&self) -> f64;
    /// Seconds for `iters` back-to-back GEMMs C[m,n] = A[m,k]·B[k,n] in `dtype`.
    fn gemm(&mut self, dtype: Dtype, m: u64, n: u64, k: u64, iters: u32) -> Result<f64, ExecError>;
    /// Seconds for `iters` device-memory copies of `bytes`.
    fn copy(&mut self, bytes: f64, iters: u32) -> Result<f64, ExecError>;
    /// Seconds for `iters` collectives of message size `bytes` on the first `ranks` devices
    /// (of the first `ranks / devices` nodes when `span` is inter). NaN on a node that takes
    /// no part.
    fn collective(
        &mut self,
        coll: Coll,
        ranks: u64,
        span: Span,
        bytes: f64,
        iters: u32,
    ) -> Result<f64, ExecError>;
}

/// What to probe.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Profile name.
    pub name: String,
    /// Models whose GEMM shapes to measure.
    pub models: Vec<ModelSpec>,
    /// The cluster the profile is for (tp sizes, micro-batches).
    pub cluster: ClusterSpec,
    /// Time budget for all probes, seconds.
    pub budget_s: f64,
    /// Smallest collective message, bytes (4 KiB by default).
    pub min_message_bytes: f64,
    /// Square grid sides for GEMMs besides the models' shapes.
    pub grid: Vec<u64>,
    /// Largest micro-batch whose shapes are probed.
    pub max_mbs: u64,
    /// Timing of GEMM and copy probes.
    pub timing: Timing,
    /// Passes over all GEMM shapes (each shape's median is kept): more than one on a host
    /// shared with other work.
    pub gemm_rounds: u32,
}

/// One step done, for a progress display.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Steps done.
    pub done: u64,
    /// Steps planned.
    pub total: u64,
    /// What ran last.
    pub what: String,
}

/// Collectives probed, in the order the cost model needs them most.
pub const COLLECTIVES: [Coll; 5] = [
    Coll::AllReduce,
    Coll::AllGather,
    Coll::ReduceScatter,
    Coll::AllToAll,
    Coll::SendRecv,
];

/// The distinct GEMM shapes (m, n, k) of `models` at every tp that divides the heads (up to a
/// node) and micro-batch b = 1, 2, 4, … up to `max_mbs`, forward and backward, from the
/// graph's own kernels (with flash attention and with the unfused attention's batched GEMMs);
/// ordered micro-batch by micro-batch, so a budget that runs out keeps the small
/// micro-batches of every tp.
pub fn gemm_shapes(
    models: &[ModelSpec],
    cluster: &ClusterSpec,
    max_mbs: u64,
) -> Vec<(u64, u64, u64)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut b = 1;
    while b <= max_mbs.max(1) {
        for model in models {
            let mut tp = 1;
            while tp <= cluster.gpus_per_node.max(1) {
                if model.heads % tp == 0 {
                    for attention in [AttentionImpl::Flash, AttentionImpl::Unfused] {
                        let mut plan = crate::spec::Plan::new(1, tp, 1, b, b, model.seq_len);
                        plan.attention = attention;
                        for s in graph_gemms(&ModelGraph::build(model, &Shard::of(&plan))) {
                            if seen.insert(s) {
                                out.push(s);
                            }
                        }
                    }
                }
                tp *= 2;
            }
        }
        b *= 2;
    }
    out
}

/// The GEMM shapes of a model's graphs, in graph order.
fn graph_gemms(g: &ModelGraph) -> Vec<(u64, u64, u64)> {
    let graphs = [
        Some(&g.embedding),
        Some(&g.dense),
        g.moe.as_ref(),
        g.mtp.as_ref(),
        Some(&g.head),
    ];
    let mut out = Vec::new();
    for op in graphs.into_iter().flatten().flat_map(|x| x.ops()) {
        for k in op.fwd.iter().chain(&op.bwd) {
            if let Kernel::Gemm { m, n, k, .. } = *k {
                out.push((m, n, k));
            }
        }
    }
    out
}

/// Message sizes: powers of two from `lo` to `hi`.
pub fn message_sizes(lo: f64, hi: f64) -> Vec<f64> {
    let mut s = lo.max(4.0);
    let mut out = Vec::new();
    while s <= hi {
        out.push(s);
        s *= 2.0;
    }
    out
}

/// A clock with a budget, split in phases.
struct Budget {
    start: Instant,
    total: Duration,
}

impl Budget {
    fn left(&self) -> f64 {
        self.total.as_secs_f64() - self.start.elapsed().as_secs_f64()
    }
}

/// Runs every probe `cfg` asks for on `backend` within the budget and returns the profile
/// (None on a node other than the first of a multi-node job, which only takes part in the
/// inter-node collectives). Budget: inter-node collectives first (a fixed schedule, every
/// node issues the same calls), then of what is left 45% GEMMs, 5% copies, 50% intra-node
/// collectives (GEMMs get 95% on a single device); each phase stops where the next probe
/// would overrun it, and the profile says so (`meta.truncated`).
pub fn run_probes(
    backend: &mut dyn Backend,
    cfg: &ProbeConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Option<Profile>, ExecError> {
    let budget = Budget {
        start: Instant::now(),
        total: Duration::from_secs_f64(cfg.budget_s.max(0.0)),
    };
    let mut meta = backend.meta();
    meta.tool_version = Some(env!("CARGO_PKG_VERSION").into());
    meta.devices = Some(backend.devices());
    let mut p = Profile::new(&cfg.name, meta);
    let (nodes, node) = backend.nodes();
    let sizes = message_sizes(cfg.min_message_bytes, backend.max_message_bytes());
    // The smallest grid cube first: its throughput bounds how long the next shapes take, so
    // the budget can skip a shape before starting it.
    let mut shapes: Vec<(u64, u64, u64)> = cfg
        .grid
        .iter()
        .min()
        .map(|&g| (g, g, g))
        .into_iter()
        .collect();
    for s in gemm_shapes(&cfg.models, &cfg.cluster, cfg.max_mbs)
        .into_iter()
        .chain(grid(&cfg.grid))
    {
        if !shapes.contains(&s) {
            shapes.push(s);
        }
    }
    let dtypes = backend.gemm_dtypes();
    let devices = backend.devices();
    let groups = (2..=devices).count() as u64;
    let sweeps = groups + nodes.saturating_sub(1);
    let gemm_dtypes = if backend.one_gemm_for_all_dtypes() {
        1
    } else {
        dtypes.len() as u64
    };
    let total = shapes.len() as u64 * gemm_dtypes * u64::from(cfg.gemm_rounds.max(1))
        + 4
        + sweeps * COLLECTIVES.len() as u64 * sizes.len() as u64;
    let mut step = Step {
        done: 0,
        total,
        progress,
    };
    for k in 2..=nodes {
        for coll in COLLECTIVES {
            let ranks = k * devices;
            let f = collective_sweep(backend, coll, ranks, Span::Inter, &sizes, None, &mut step)?;
            p.collectives.extend(f);
        }
    }
    if node != 0 {
        return Ok(None);
    }
    let (now, left) = (budget.start.elapsed().as_secs_f64(), budget.left().max(0.0));
    let gemm_end = now + left * if devices < 2 { 0.95 } else { 0.45 };
    let mut truncated = gemm_phase(
        backend, cfg, &mut p, &shapes, &dtypes, &budget, gemm_end, &mut step,
    )?;
    truncated |= copy_phase(
        backend,
        cfg,
        &mut p,
        &budget,
        gemm_end + left * 0.05,
        &mut step,
    )?;
    let mut left_sweeps = groups * COLLECTIVES.len() as u64;
    for ranks in 2..=devices {
        for coll in COLLECTIVES {
            let share = budget.left() / left_sweeps.max(1) as f64;
            left_sweeps -= 1;
            let until = budget.start.elapsed().as_secs_f64() + share;
            let stop = |next: f64| budget.start.elapsed().as_secs_f64() + next > until;
            let f = collective_sweep(
                backend,
                coll,
                ranks,
                Span::Intra,
                &sizes,
                Some(&stop),
                &mut step,
            )?;
            truncated |= f.as_ref().is_none_or(|f| f.points.len() < sizes.len());
            p.collectives.extend(f);
        }
    }
    p.meta.truncated = truncated;
    Ok(Some(p))
}

struct Step<'a> {
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(Progress),
}

impl Step<'_> {
    fn tick(&mut self, what: String) {
        self.done += 1;
        (self.progress)(Progress {
            done: self.done.min(self.total),
            total: self.total,
            what,
        });
    }
}

fn grid(sides: &[u64]) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    for &m in sides {
        for &n in sides {
            for &k in sides {
                out.push((m, n, k));
            }
        }
    }
    out
}

/// A probed GEMM: data type and shape.
type GemmKey = (Dtype, u64, u64, u64);

/// GEMMs in order, `cfg.gemm_rounds` times over (each shape's median over the rounds, so a
/// shared host's slow moments spread over the shapes); a shape is left out when it does not
/// fit the device, and skipped when the best throughput seen so far says its probe would end
/// after `end_at` (seconds into the budget). Returns whether the budget made it skip any.
#[allow(clippy::too_many_arguments)]
fn gemm_phase(
    b: &mut dyn Backend,
    cfg: &ProbeConfig,
    p: &mut Profile,
    shapes: &[(u64, u64, u64)],
    dtypes: &[Dtype],
    budget: &Budget,
    end_at: f64,
    step: &mut Step,
) -> Result<bool, ExecError> {
    let max_bytes = b.max_gemm_bytes();
    let mut rate: Option<f64> = None;
    let mut skipped = false;
    // The calls one probe makes at least: warm-up, then each repeat ≥ one call.
    let calls = (cfg.timing.warmup + cfg.timing.repeats) as f64;
    let shared = b.one_gemm_for_all_dtypes();
    let dtypes = if shared { &dtypes[..1] } else { dtypes };
    let mut samples: Vec<(GemmKey, Vec<f64>)> = Vec::new();
    for round in 0..cfg.gemm_rounds.max(1) {
        for &(m, n, k) in shapes {
            for &dtype in dtypes {
                step.tick(format!("gemm {dtype} {m}x{n}x{k}"));
                let flops = 2.0 * (m * n) as f64 * k as f64;
                let bytes = (m * k + k * n + m * n) as f64 * 2.0;
                let cost = rate.map_or(0.0, |r| {
                    calls * flops / r + cfg.timing.repeats as f64 * cfg.timing.min_run_s
                });
                let known = samples.iter().position(|(key, _)| *key == (dtype, m, n, k));
                if bytes > max_bytes || (round > 0 && known.is_none()) {
                    continue;
                }
                if budget.start.elapsed().as_secs_f64() + cost > end_at {
                    skipped = true;
                    continue;
                }
                let seconds = cfg.timing.measure(|iters| b.gemm(dtype, m, n, k, iters))?;
                rate = Some(rate.map_or(flops / seconds, |x: f64| x.max(flops / seconds)));
                match known {
                    Some(i) => samples[i].1.push(seconds),
                    None => samples.push(((dtype, m, n, k), vec![seconds])),
                }
            }
        }
    }
    let all = if shared { b.gemm_dtypes() } else { Vec::new() };
    record_gemms(p, samples, &all);
    Ok(skipped)
}

/// Each probed GEMM's median as a point (of every type in `all` when one kernel stands for
/// them all).
fn record_gemms(p: &mut Profile, samples: Vec<(GemmKey, Vec<f64>)>, all: &[Dtype]) {
    for ((dtype, m, n, k), mut v) in samples {
        let seconds = crate::calib::median(&mut v);
        let types = if all.is_empty() { &[dtype][..] } else { all };
        for &dtype in types {
            p.gemm.push(GemmPoint {
                dtype,
                m,
                n,
                k,
                seconds,
            });
        }
    }
}

/// Device copies of 1 MiB to 1 GiB (×16 steps, as far as two buffers fit the device's GEMM
/// allowance) for the HBM bandwidth, until `end_at`. Returns whether the budget cut it short.
fn copy_phase(
    b: &mut dyn Backend,
    cfg: &ProbeConfig,
    p: &mut Profile,
    budget: &Budget,
    end_at: f64,
    step: &mut Step,
) -> Result<bool, ExecError> {
    let mut copies = Vec::new();
    let mut skipped = false;
    for bytes in [MIB, 16.0 * MIB, 256.0 * MIB, 1024.0 * MIB] {
        step.tick(format!("copy {:.0} MiB", bytes / MIB));
        let last = copies.last().map_or(0.0, |c: &CopyPoint| c.seconds * 16.0);
        let cost = last * (cfg.timing.warmup + cfg.timing.repeats) as f64;
        if 2.0 * bytes > b.max_gemm_bytes() {
            continue;
        }
        if budget.start.elapsed().as_secs_f64() + cost > end_at {
            skipped = true;
            continue;
        }
        let seconds = cfg.timing.measure(|iters| b.copy(bytes, iters))?;
        copies.push(CopyPoint { bytes, seconds });
    }
    p.set_copies(copies);
    Ok(skipped)
}

/// One collective over increasing sizes on one group; `stop(next_cost_s)` ends the sweep
/// early. The call schedule depends on sizes only (`Timing::collective_iters`), so nodes of
/// a multi-node job stay in step.
fn collective_sweep(
    b: &mut dyn Backend,
    coll: Coll,
    ranks: u64,
    span: Span,
    sizes: &[f64],
    stop: Option<&dyn Fn(f64) -> bool>,
    step: &mut Step,
) -> Result<Option<CollectiveFit>, ExecError> {
    const WARMUP: u32 = 1;
    const REPEATS: u32 = 3;
    let mut points = Vec::new();
    let mut last_s = 0.0;
    for &bytes in sizes {
        step.tick(format!(
            "{} {ranks} ranks {}",
            coll.name(),
            fmt_bytes(bytes)
        ));
        let iters = Timing::collective_iters(bytes);
        // Twice the size takes at most twice the time (α-β).
        let next = 2.0 * last_s * ((WARMUP + REPEATS) * iters) as f64;
        if stop.is_some_and(|f| f(next)) {
            continue;
        }
        b.collective(coll, ranks, span, bytes, WARMUP)?;
        let mut xs = Vec::new();
        for _ in 0..REPEATS {
            xs.push(b.collective(coll, ranks, span, bytes, iters)? / iters as f64);
        }
        let seconds = crate::calib::median(&mut xs);
        if seconds.is_finite() {
            last_s = seconds;
            points.push(CollectivePoint {
                bytes,
                seconds,
                busbw_gbytes_s: None,
                residual: 0.0,
            });
        }
    }
    if points.is_empty() {
        return Ok(None);
    }
    let mut f = CollectiveFit::fit(coll, ranks, span, points);
    f.source = Some("probe".into());
    Ok(Some(f))
}

/// Bytes as the largest binary unit that keeps an integer, e.g. `4 KiB`, `1 GiB`.
pub fn fmt_bytes(b: f64) -> String {
    for (unit, name) in [(MIB * 1024.0, "GiB"), (MIB, "MiB"), (1024.0, "KiB")] {
        if b >= unit && (b / unit).fract() == 0.0 {
            return format!("{} {name}", b / unit);
        }
    }
    format!("{b} B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{load_cluster, load_model};

    /// A device that answers instantly with made-up physics: GEMMs at 100 TFLOP/s, copies at
    /// 1000 GB/s of traffic, every collective 5 µs + S / 50 GB/s.
    struct Fake;

    impl Backend for Fake {
        fn meta(&self) -> Meta {
            Meta {
                device: "fake".into(),
                backend: "fake".into(),
                ..Default::default()
            }
        }
        fn devices(&self) -> u64 {
            4
        }
        fn gemm_dtypes(&self) -> Vec<Dtype> {
            vec![Dtype::Bf16]
        }
        fn max_gemm_bytes(&self) -> f64 {
            1e12
        }
        fn max_message_bytes(&self) -> f64 {
            MIB
        }
        fn gemm(&mut self, _: Dtype, m: u64, n: u64, k: u64, iters: u32) -> Result<f64, ExecError> {
            Ok(iters as f64 * 2.0 * (m * n * k) as f64 / 100e12)
        }
        fn copy(&mut self, bytes: f64, iters: u32) -> Result<f64, ExecError> {
            Ok(iters as f64 * 2.0 * bytes / 1000e9)
        }
        fn collective(
            &mut self,
            _: Coll,
            _: u64,
            _: Span,
            bytes: f64,
            iters: u32,
        ) -> Result<f64, ExecError> {
            Ok(iters as f64 * (5e-6 + bytes / 50e9))
        }
    }

    fn config(budget_s: f64) -> ProbeConfig {
        let model = load_model("gpt2-xl").unwrap();
        ProbeConfig {
            name: "fake".into(),
            models: vec![model],
            cluster: load_cluster("a100x8").unwrap(),
            budget_s,
            min_message_bytes: 4096.0,
            grid: vec![1024],
            max_mbs: 2,
            gemm_rounds: 1,
            timing: Timing {
                warmup: 1,
                repeats: 3,
                min_run_s: 0.0,
                max_iters: 1,
            },
        }
    }

    #[test]
    fn shapes_come_from_the_graph_per_tp_and_micro_batch() {
        // gpt2-xl: h = 1600, 25 heads (tp 1 and 5 divide; of 1, 2, 4, 8 only tp = 1), s = 1024.
        // QKV forward is m = b·s = 1024, n = 3h = 4800, k = h = 1600; b = 2 doubles m.
        let s = gemm_shapes(
            &[load_model("gpt2-xl").unwrap()],
            &load_cluster("a100x8").unwrap(),
            2,
        );
        assert!(s.contains(&(1024, 4800, 1600)), "{s:?}");
        assert!(s.contains(&(2048, 4800, 1600)), "{s:?}");
        let first_b2 = s.iter().position(|x| x.0 == 2048).unwrap();
        assert!(
            s[..first_b2].iter().all(|x| x.0 != 2048),
            "micro-batch 1 first"
        );
        // llama3-8b at tp 2: QKV n = (4096 + 2·1024)/2 = 3072 for 8192 tokens.
        let s = gemm_shapes(
            &[load_model("llama3-8b").unwrap()],
            &load_cluster("a100x8").unwrap(),
            1,
        );
        assert!(s.contains(&(8192, 3072, 4096)), "{s:?}");
    }

    #[test]
    fn probes_fill_a_profile_the_fits_recover() {
        let mut b = Fake;
        let p = run_probes(&mut b, &config(100.0), &mut |_| {})
            .unwrap()
            .unwrap();
        assert!(!p.meta.truncated);
        // 2·1024³ FLOP at 100 TFLOP/s.
        let g = p
            .gemm
            .iter()
            .find(|g| (g.m, g.n, g.k) == (1024, 1024, 1024))
            .unwrap();
        assert!((g.seconds - 2.0 * 1024f64.powi(3) / 100e12).abs() < 1e-15);
        assert!((p.hbm_gbytes_s.unwrap() - 1000.0).abs() < 1e-9);
        // 3 group sizes × 5 collectives, 4 KiB–1 MiB (9 sizes), each one exact line.
        assert_eq!(p.collectives.len(), 15);
        let f = p.fit_of(Coll::AllGather, 3, Span::Intra).unwrap();
        assert_eq!(f.points.len(), 9);
        assert_eq!(f.segments.len(), 1);
        assert!((f.segments[0].alpha_s - 5e-6).abs() < 1e-12);
        assert!((1.0 / f.segments[0].beta_s_per_byte - 50e9).abs() < 1e3);
    }

    #[test]
    fn an_empty_budget_is_reported_as_truncated() {
        let mut b = Fake;
        let p = run_probes(&mut b, &config(0.0), &mut |_| {})
            .unwrap()
            .unwrap();
        assert!(p.meta.truncated);
    }
}
