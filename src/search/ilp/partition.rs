//! ILP 2 — stage partition and per-stage recomputation (DESIGN.md §4.3): how many
//! transformer layers each pipeline stage holds (the embedding stays on the first, the LM
//! head and loss on the last) and how many of them recompute their forward, so that the
//! pipelined step is shortest while every stage fits in memory.
//!
//! Stage i's time and memory are affine in its layer count n_i and recompute count r_i (plus
//! a step when r_i > 0: the rematerialisation buffer); its memory coefficients differ per
//! stage because stage i holds more micro-batches in flight than stage i + 1
//! (`cost::memory::in_flight_chunks`). The model (see `solve_uncached`) picks one candidate
//! layer count per stage — a handful per stage once `bounds` has cut what no optimum uses,
//! never a binary per layer × stage — each with the least recompute count that fits.

use super::cache::{Key, Memo};
use super::solve::{IlpError, IlpOptions, IlpReport, IlpStatus, Model, minimise};
use crate::units::GIB;
use good_lp::{Expression, variable};
use std::sync::LazyLock;

/// One stage's time and memory as affine functions of its layers n, recomputed layers r and
/// y = [r > 0].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StageCoeffs {
    /// Time per micro-batch with no layers, s (embedding, head, pipeline transfers).
    pub time_fixed_s: f64,
    /// Time per micro-batch per layer held (forward + backward), s.
    pub time_per_layer_s: f64,
    /// Extra time per micro-batch per recomputed layer, s.
    pub time_per_recomputed_s: f64,
    /// Memory with no layers and no recomputation, bytes.
    pub mem_fixed_bytes: f64,
    /// Extra memory once any layer recomputes (the rematerialised layer's buffers), bytes.
    pub mem_recompute_fixed_bytes: f64,
    /// Memory per layer held, bytes.
    pub mem_per_layer_bytes: f64,
    /// Memory change per recomputed layer (negative: recomputation frees activations), bytes.
    pub mem_per_recomputed_bytes: f64,
}

impl StageCoeffs {
    /// Time per micro-batch with n layers, r of them recomputed.
    pub fn time_s(&self, n: u64, r: u64) -> f64 {
        self.time_fixed_s + n as f64 * self.time_per_layer_s + r as f64 * self.time_per_recomputed_s
    }

    /// Memory with n layers, r of them recomputed.
    pub fn mem_bytes(&self, n: u64, r: u64) -> f64 {
        self.mem_fixed_bytes
            + if r > 0 {
                self.mem_recompute_fixed_bytes
            } else {
                0.0
            }
            + n as f64 * self.mem_per_layer_bytes
            + r as f64 * self.mem_per_recomputed_bytes
    }
}

/// One instance of ILP 2.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionProblem {
    /// Transformer layers to place.
    pub layers: u64,
    /// Per pipeline stage, first to last.
    pub stages: Vec<StageCoeffs>,
    /// Micro-batches per step, m.
    pub n_micro: u64,
    /// Model chunks per stage, v (1 without interleaving).
    pub vpp: u64,
    /// Device memory, bytes.
    pub capacity_bytes: f64,
    /// Layers per stage fixed to this (interleaving keeps chunks uniform).
    pub fixed_layers: Option<u64>,
    /// Whether layers may recompute (full recomputation plans).
    pub recompute: bool,
    /// Only assignments Megatron-LM can launch ([`PartitionProblem::megatron_form`]).
    pub megatron: bool,
}

impl PartitionProblem {
    /// Step time of the pipeline for stage times T_i (closed form of `cost::step`, Narayanan
    /// et al. SC'21 §2.2): Σ T_i / v + (m·v − 1)·max T_i / v; m·T for one stage.
    pub fn pipeline_s(&self, times: &[f64]) -> f64 {
        let max = times.iter().copied().fold(0.0, f64::max);
        let sum: f64 = times.iter().sum();
        let v = self.vpp.max(1) as f64;
        sum / v + (self.n_micro as f64 * v - 1.0) * max / v
    }

    /// Weight of the tie-break, s per GiB of the fullest stage: among partitions equally fast
    /// (integral layers leave slack off the bottleneck), prefer the one with the most memory
    /// headroom. 1e-4 of a layer's time per GiB (80 GiB are worth under 1% of one layer), and
    /// never more than half what recomputing a layer costs per GiB it frees, so recomputing
    /// beyond what fits never pays.
    pub fn tie_s_per_gib(&self) -> f64 {
        let least =
            |f: fn(&StageCoeffs) -> f64| self.stages.iter().map(f).fold(f64::INFINITY, f64::min);
        let layer = 1e-4 * least(|s| s.time_per_layer_s).max(0.0);
        let freed = self
            .stages
            .iter()
            .map(|s| -s.mem_per_recomputed_bytes / GIB)
            .fold(0.0, f64::max);
        if !self.recompute || freed <= 0.0 {
            return layer;
        }
        let v = self.vpp.max(1) as f64;
        layer.min(0.5 * least(|s| s.time_per_recomputed_s).max(0.0) / v / freed)
    }

    /// Whether `(n, r)` is an assignment Megatron-LM can launch: it sets the first and the
    /// last stage's layers (`--decoder-first-pipeline-num-layers`,
    /// `--decoder-last-pipeline-num-layers`) and splits the rest evenly over the middle
    /// stages, and its `block` recomputation recomputes the first N layers of every stage, all
    /// of a stage with fewer (`--recompute-num-layers N`): r_i = min(N, n_i) for one N
    /// (`spec::launch::megatron` writes exactly these; with virtual stages, where N counts
    /// per chunk and the plan per stage, only none or all).
    pub fn megatron_form(&self, n: &[u64], r: &[u64]) -> bool {
        let middle = n.get(1..n.len().saturating_sub(1)).unwrap_or(&[]);
        let top = r.iter().copied().max().unwrap_or(0);
        let chunked = self.vpp > 1 && r.iter().zip(n).any(|(&r, &n)| r != 0 && r != n);
        middle.iter().all(|&x| x == middle[0])
            && r.iter().zip(n).all(|(&r, &n)| r == top.min(n))
            && !chunked
    }

    /// Objective of an assignment: pipeline time plus the memory tie-break; `None` when a
    /// stage does not fit or the counts are invalid.
    pub fn objective(&self, n: &[u64], r: &[u64]) -> Option<f64> {
        // Interleaved stages recompute all their layers or none (`Plan::check`:
        // `PartialRecomputeInterleaved`).
        let whole = self.vpp <= 1 || r.iter().zip(n).all(|(&r, &n)| r == 0 || r == n);
        let ok = (!self.megatron || self.megatron_form(n, r))
            && whole
            && n.len() == self.stages.len()
            && r.len() == n.len()
            && n.iter().sum::<u64>() == self.layers
            && n.iter()
                .zip(r)
                .all(|(&n, &r)| r <= n && n >= self.min_layers() && (self.recompute || r == 0))
            && self.fixed_layers.is_none_or(|f| n.iter().all(|&x| x == f));
        let fits = self
            .stages
            .iter()
            .zip(n.iter().zip(r))
            .all(|(s, (&n, &r))| s.mem_bytes(n, r) <= self.capacity_bytes);
        let times: Vec<f64> = self
            .stages
            .iter()
            .zip(n.iter().zip(r))
            .map(|(s, (&n, &r))| s.time_s(n, r))
            .collect();
        let peak = self
            .stages
            .iter()
            .zip(n.iter().zip(r))
            .map(|(s, (&n, &r))| s.mem_bytes(n, r))
            .fold(f64::NEG_INFINITY, f64::max);
        (ok && fits).then(|| self.pipeline_s(&times) + self.tie_s_per_gib() * peak / GIB)
    }

    /// Whether stages `i` and `j` have the same coefficients (to 1e-9): swapping their layers
    /// changes nothing, so the model may order them.
    pub fn interchangeable(&self, i: usize, j: usize) -> bool {
        let (a, b) = (&self.stages[i], &self.stages[j]);
        let same = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(y.abs());
        same(a.time_fixed_s, b.time_fixed_s)
            && same(a.time_per_layer_s, b.time_per_layer_s)
            && same(a.time_per_recomputed_s, b.time_per_recomputed_s)
            && same(a.mem_fixed_bytes, b.mem_fixed_bytes)
            && same(a.mem_recompute_fixed_bytes, b.mem_recompute_fixed_bytes)
            && same(a.mem_per_layer_bytes, b.mem_per_layer_bytes)
            && same(a.mem_per_recomputed_bytes, b.mem_per_recomputed_bytes)
    }

    /// The fewest layers a stage holds: one, or the fixed count of interleaved chunks.
    pub(super) fn min_layers(&self) -> u64 {
        self.fixed_layers.unwrap_or(1)
    }

    fn key(&self, opts: &IlpOptions) -> Key {
        let mut k = Key::default();
        k.u(self.layers)
            .u(self.n_micro)
            .u(self.vpp)
            .f(self.capacity_bytes)
            .u(self.fixed_layers.map_or(0, |f| f + 1))
            .u(u64::from(self.recompute))
            .u(u64::from(self.megatron))
            .u(opts.solver as u64)
            .f(opts.time_limit_s)
            .f(opts.mip_gap);
        for s in &self.stages {
            k.f(s.time_fixed_s)
                .f(s.time_per_layer_s)
                .f(s.time_per_recomputed_s)
                .f(s.mem_fixed_bytes)
                .f(s.mem_recompute_fixed_bytes)
                .f(s.mem_per_layer_bytes)
                .f(s.mem_per_recomputed_bytes);
        }
        k
    }
}

/// ILP 2's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// Layers per stage (empty when infeasible).
    pub stage_layers: Vec<u64>,
    /// Recomputed layers per stage (empty when infeasible).
    pub recompute_layers: Vec<u64>,
    /// Pipeline time of the assignment, s (the objective less its memory tie-break; NaN when
    /// infeasible).
    pub pipeline_s: f64,
    /// Solver status, bound and gap.
    pub report: IlpReport,
}

static MEMO: LazyLock<Memo<Result<Partition, IlpError>>> = LazyLock::new(Memo::default);

/// Solves `p` (memoised by its inputs).
pub fn solve(p: &PartitionProblem, opts: &IlpOptions) -> Result<Partition, IlpError> {
    MEMO.get_or_compute(p.key(opts), || {
        if p.megatron {
            Ok(super::megatron_split::solve(p, opts))
        } else {
            solve_uncached(p, opts)
        }
    })
}

/// The partition `(n, r)` of `p` with its pipeline time.
pub(super) fn answer(
    p: &PartitionProblem,
    n: Vec<u64>,
    r: Vec<u64>,
    report: IlpReport,
) -> Partition {
    let times: Vec<f64> = p
        .stages
        .iter()
        .zip(n.iter().zip(&r))
        .map(|(s, (&n, &r))| s.time_s(n, r))
        .collect();
    Partition {
        pipeline_s: p.pipeline_s(&times),
        stage_layers: n,
        recompute_layers: r,
        report,
    }
}

/// Builds and solves the model. A stage's recompute count is the least with which its layers
/// fit: more only adds time (and the tie-break is too light to pay for it), so each stage
/// chooses among candidate layer counts k, each with its least recompute count r*(k), time
/// T*(k) and memory M*(k). One binary x_ik per stage and candidate count — a handful per
/// stage once `bounds` has cut the counts no optimum exceeds, never one per layer × stage:
/// minimise (m·v − 1)/v · z + Σ_ik T*_i(k)·x_ik / v + tie · w subject to Σ_k x_ik = 1,
/// Σ_ik k·x_ik = L, Σ_k T*_i(k)·x_ik ≤ z, Σ_k M*_i(k)·x_ik ≤ w; with the cut z ≥ z_min and the
/// least-time partition (`bounds`) as a start.
fn solve_uncached(p: &PartitionProblem, opts: &IlpOptions) -> Result<Partition, IlpError> {
    let Some((z_min, (mut n0, _))) =
        (p.min_bottleneck_s()).and_then(|z| Some((z, p.best_partition()?)))
    else {
        // Even the largest count each stage fits leaves layers over: proven infeasible
        // without branching.
        return Ok(infeasible(opts));
    };
    // Interchangeable stages in descending order, as the model's symmetry rows want them.
    for i in 1..n0.len() {
        let mut j = i;
        while j > 0 && p.interchangeable(j - 1, j) && n0[j - 1] < n0[j] {
            n0.swap(j - 1, j);
            j -= 1;
        }
    }
    let r0: Vec<u64> = (0..n0.len())
        .map(|i| p.min_recompute(i, n0[i]).unwrap_or(0))
        .collect();
    let z_max = p.max_bottleneck_s(p.objective(&n0, &r0).unwrap_or(f64::INFINITY));
    let (m, picks) = build(p, z_min, z_max, &n0);
    let (values, report) = minimise(m, opts)?;
    let Some(values) = values else {
        return Ok(Partition {
            report,
            ..infeasible(opts)
        });
    };
    let (n, r): (Vec<u64>, Vec<u64>) = picks
        .iter()
        .map(|c| {
            let &(_, k, r) = c
                .iter()
                .max_by(|a, b| values[a.0].total_cmp(&values[b.0]))
                .expect("every stage has a candidate");
            (k, r)
        })
        .unzip();
    Ok(answer(p, n, r, report))
}

/// A stage's candidates: (variable index, layer count, recompute count).
type Candidates = Vec<(usize, u64, u64)>;

/// The model of [`solve_uncached`] with the partition `n0` as its start: candidate
/// counts per stage from what the others leave (at least L − Σ_{j≠i} hi_j) to the most that
/// fit under the bottleneck `z_max` no optimum exceeds.
fn build(p: &PartitionProblem, z_min: f64, z_max: f64, n0: &[u64]) -> (Model, Vec<Candidates>) {
    let v = p.vpp.max(1) as f64;
    let (lo, _) = p.count_range();
    let hi: Vec<u64> = (0..p.stages.len())
        .map(|i| p.most_layers(i, z_max).unwrap_or(lo).max(n0[i]))
        .collect();
    let others = |i: usize| hi.iter().sum::<u64>() - hi[i];
    let mut m = Model::new();
    let z = m.add(variable().min(z_min));
    let w = m.add(variable());
    let mut start = vec![z_min, f64::NEG_INFINITY];
    let mut objective = (p.n_micro as f64 * v - 1.0) / v * z + p.tie_s_per_gib() * w;
    let mut layers = Expression::default();
    let mut picks = Vec::with_capacity(p.stages.len());
    let mut counts: Vec<Expression> = Vec::with_capacity(p.stages.len());
    for (i, s) in p.stages.iter().enumerate() {
        let [mut one, mut time, mut mem] = [(); 3].map(|_| Expression::default());
        let mut cands = Vec::new();
        for k in lo.max(p.layers.saturating_sub(others(i)))..=hi[i] {
            let Some(r) = p.min_recompute(i, k) else {
                break;
            };
            let (t, gib) = (s.time_s(k, r), s.mem_bytes(k, r) / GIB);
            let x = m.add(variable().binary());
            start.push(f64::from(u8::from(k == n0[i])));
            if k == n0[i] {
                start[1] = start[1].max(gib);
            }
            one += x;
            layers.add_mul(k as f64, x);
            time.add_mul(t, x);
            mem.add_mul(gib, x);
            objective.add_mul(t / v, x);
            cands.push((m.list.len() - 1, k, r));
        }
        m.constraints.push(one.eq(1.0));
        m.constraints.push((time - z).leq(0.0));
        m.constraints.push((mem - w).leq(0.0));
        let count: Expression = cands.iter().map(|c| c.1 as f64 * m.list[c.0]).sum();
        if i > 0 && p.interchangeable(i - 1, i) {
            // Symmetry: of two interchangeable stages the earlier holds no fewer layers.
            m.constraints
                .push((count.clone() - counts[i - 1].clone()).leq(0.0));
        }
        counts.push(count);
        picks.push(cands);
    }
    m.constraints.push(layers.eq(p.layers as f64));
    m.start = Some(start);
    m.objective = objective;
    (m, picks)
}

pub(super) fn infeasible(opts: &IlpOptions) -> Partition {
    Partition {
        stage_layers: Vec::new(),
        recompute_layers: Vec::new(),
        pipeline_s: f64::NAN,
        report: IlpReport {
            solver: opts.solver,
            status: IlpStatus::Infeasible,
            objective: f64::NAN,
            best_bound: f64::NAN,
            gap: f64::NAN,
            variables: 0,
            constraints: 0,
        },
    }
}

/// The optimum by enumeration (for tests and tiny instances): (objective, n, r), or `None`
/// when nothing fits.
#[cfg(test)]
pub fn brute_force(p: &PartitionProblem) -> Option<(f64, Vec<u64>, Vec<u64>)> {
    let k = p.stages.len();
    let mut best: Option<(f64, Vec<u64>, Vec<u64>)> = None;
    let mut n = vec![0u64; k];
    compositions(0, p.layers, &mut n, &mut |n| {
        let mut r = vec![0u64; k];
        loop {
            if let Some(t) = p.objective(n, &r)
                && best.as_ref().is_none_or(|b| t < b.0)
            {
                best = Some((t, n.to_vec(), r.clone()));
            }
            // Next r in mixed radix (n_i + 1), or stop.
            let mut i = 0;
            while i < k {
                let top = if p.recompute { n[i] } else { 0 };
                if r[i] < top {
                    r[i] += 1;
                    break;
                }
                r[i] = 0;
                i += 1;
            }
            if i == k {
                break;
            }
        }
    });
    best
}

#[cfg(test)]
fn compositions(i: usize, left: u64, n: &mut Vec<u64>, f: &mut dyn FnMut(&[u64])) {
    let k = n.len();
    if i == k - 1 {
        n[i] = left;
        f(n);
        return;
    }
    for x in 1..=left.saturating_sub((k - 1 - i) as u64) {
        n[i] = x;
        compositions(i + 1, left - x, n, f);
    }
}

/// A seeded random instance (1–4 stages, a few layers each, some memory-bound, some with
/// fixed chunks) for checking the solvers against [`brute_force`].
#[cfg(test)]
pub(super) fn random(rng: &mut crate::search::ilp::SplitMix) -> PartitionProblem {
    let pp = rng.int(1, 4);
    let layers = rng.int(pp, pp + 6);
    let fixed = (layers % pp == 0 && rng.int(0, 3) == 0).then_some(layers / pp);
    let per_layer = rng.uniform(1.0, 4.0) * GIB;
    let mut stages: Vec<StageCoeffs> = (0..pp)
        .map(|i| StageCoeffs {
            time_fixed_s: rng.uniform(0.0, 2.0),
            time_per_layer_s: rng.uniform(0.8, 1.2),
            time_per_recomputed_s: rng.uniform(0.2, 0.5),
            // Earlier stages hold more micro-batches in flight.
            mem_fixed_bytes: rng.uniform(0.0, 6.0) * GIB,
            mem_recompute_fixed_bytes: rng.uniform(0.0, 1.0) * GIB,
            mem_per_layer_bytes: per_layer * (pp - i) as f64,
            mem_per_recomputed_bytes: -rng.uniform(0.3, 0.9) * per_layer * (pp - i) as f64,
        })
        .collect();
    // Stages holding as many micro-batches as their neighbour are interchangeable.
    for i in 1..stages.len() {
        if rng.int(0, 2) == 0 {
            stages[i] = stages[i - 1];
        }
    }
    PartitionProblem {
        layers,
        stages,
        n_micro: rng.int(1, 16),
        vpp: if fixed.is_some() { rng.int(1, 2) } else { 1 },
        capacity_bytes: rng.uniform(0.6, 2.0) * per_layer * layers as f64,
        fixed_layers: fixed,
        recompute: rng.int(0, 2) > 0,
        megatron: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::ilp::SplitMix;

    /// Issue 4: ILP 2's optimum equals brute force on 80 seeded random instances (some
    /// infeasible, some memory-bound, some with fixed chunks), under the build's solver.
    #[test]
    fn optimum_equals_brute_force_on_random_instances() {
        let mut rng = SplitMix(0x11B2);
        let (mut feasible, mut nonuniform, mut partial) = (0, 0, 0);
        for case in 0..80 {
            let p = random(&mut rng);
            let ilp = solve_uncached(&p, &IlpOptions::default()).unwrap();
            match brute_force(&p) {
                None => assert!(ilp.stage_layers.is_empty(), "case {case}: {p:?}"),
                Some((best, n, r)) => {
                    feasible += 1;
                    let got = p.objective(&ilp.stage_layers, &ilp.recompute_layers);
                    assert!(got.is_some(), "case {case}: ILP answer infeasible {ilp:?}");
                    let got = got.unwrap();
                    assert!(
                        (got - best).abs() <= 1e-6 * best,
                        "case {case}: ILP {got} vs brute force {best} ({n:?}, {r:?}) {p:?}"
                    );
                    assert!((ilp.report.objective - got).abs() <= 1e-6 * got);
                    assert!(ilp.report.gap <= 1e-6, "{:?}", ilp.report);
                    nonuniform += usize::from(n.iter().any(|&x| x != n[0]));
                    partial += usize::from(r.iter().zip(&n).any(|(r, n)| *r > 0 && r < n));
                }
            }
        }
        // The instances exercise what the ILP decides.
        assert!((50..80).contains(&feasible), "{feasible}");
        assert!(nonuniform >= 20, "{nonuniform}");
        assert!(partial >= 5, "{partial}");
    }

    /// Two stages, 4 layers, 8 micro-batches, hand-derived. Stage times 1 + n (first) and
    /// 3 + n (last, the head): 3|1 gives max(4, 4) = 4 → (4 + 4) + 7·4 = 36; 2|2 gives
    /// max(3, 5) → 8 + 35 = 43. Memory 10·n GiB on the first stage against 25 GiB allows at
    /// most 2 layers there unless it recomputes (−6 GiB each): 3 layers with one recomputed
    /// (30 − 6 = 24) costs 0.5 more on the first stage, 4.5|4 → 8.5 + 7·4.5 = 40.
    #[test]
    fn hand_derived_two_stage_instance() {
        let stage = |fixed: f64, mem: f64| StageCoeffs {
            time_fixed_s: fixed,
            time_per_layer_s: 1.0,
            time_per_recomputed_s: 0.5,
            mem_fixed_bytes: 0.0,
            mem_recompute_fixed_bytes: 0.0,
            mem_per_layer_bytes: mem * GIB,
            mem_per_recomputed_bytes: -6.0 * GIB,
        };
        let mut p = PartitionProblem {
            layers: 4,
            stages: vec![stage(1.0, 10.0), stage(3.0, 5.0)],
            n_micro: 8,
            vpp: 1,
            capacity_bytes: 100.0 * GIB,
            fixed_layers: None,
            recompute: true,
            megatron: false,
        };
        let opts = IlpOptions::default();
        let a = solve_uncached(&p, &opts).unwrap();
        assert_eq!(
            (a.stage_layers.clone(), a.recompute_layers.clone()),
            (vec![3, 1], vec![0, 0])
        );
        assert!((a.pipeline_s - 36.0).abs() < 1e-9);
        p.capacity_bytes = 25.0 * GIB;
        let b = solve_uncached(&p, &opts).unwrap();
        assert_eq!(
            (b.stage_layers, b.recompute_layers),
            (vec![3, 1], vec![1, 0])
        );
        assert!((b.pipeline_s - 40.0).abs() < 1e-9, "{}", b.pipeline_s);
        p.recompute = false;
        let c = solve_uncached(&p, &opts).unwrap();
        assert_eq!(c.stage_layers, vec![2, 2]);
        assert!((c.pipeline_s - 43.0).abs() < 1e-9);
        p.capacity_bytes = 5.0 * GIB;
        assert!(solve_uncached(&p, &opts).unwrap().stage_layers.is_empty());
        assert_eq!(
            solve_uncached(&p, &opts).unwrap().report.status,
            super::super::IlpStatus::Infeasible
        );
    }

    /// Both solvers find the same optimum on the random instances (`--features highs`).
    #[cfg(feature = "highs")]
    #[test]
    fn microlp_and_highs_agree() {
        let mut rng = SplitMix(0x11B2);
        crate::search::ilp::assert_solvers_agree(80, |m, h| {
            let p = random(&mut rng);
            let a = solve_uncached(&p, m).unwrap().report;
            (a, solve_uncached(&p, h).unwrap().report)
        });
    }

    /// A solve stopped by its time limit returns the best incumbent it has (the least-time start
    /// at worst) with status `time_limit` and the gap to its bound.
    #[test]
    fn time_limit_returns_the_incumbent() {
        let mut rng = SplitMix(0x71);
        let p = (0..200)
            .map(|_| random(&mut rng))
            .find(|p| p.stages.len() == 4 && p.fixed_layers.is_none() && brute_force(p).is_some())
            .unwrap();
        let opts = IlpOptions {
            time_limit_s: 0.0,
            ..IlpOptions::default()
        };
        let r = solve_uncached(&p, &opts).unwrap();
        let got = p.objective(&r.stage_layers, &r.recompute_layers).unwrap();
        let best = brute_force(&p).unwrap().0;
        assert!(got >= best - 1e-9 * best && (r.report.objective - got).abs() <= 1e-9 * got);
        // HiGHS may finish this small instance in its presolve, before the clock is read.
        assert!(
            matches!(r.report.status, IlpStatus::TimeLimit | IlpStatus::Optimal),
            "{:?}",
            r.report
        );
    }
}
