//! Simulator tests: against the closed forms of cost::step and cost::memory over a seeded
//! sweep, hand-derived timelines, and the cost model's own numbers for a real plan.

use super::*;
use crate::cost::stages::{ChunkWork, GradSync, dp_exposed_with_s};
use crate::cost::{PassCost, step};
use crate::spec::{Framework, Recompute, load_cluster, load_model};

/// SplitMix64 (Steele et al. 2014): a seeded generator, so the sweep is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in lo..=hi.
    fn int(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    /// Uniform in [lo, hi).
    fn real(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `p` identical stages of `v` chunks; each stage needs `tf`/`tb` seconds per micro-batch
/// forward/backward, and saves `act` bytes per chunk and micro-batch.
fn uniform(p: u64, v: u64, tf: f64, tb: f64, act: f64) -> Vec<StageWork> {
    let chunk = ChunkWork {
        layers: 1,
        fwd: PassCost {
            compute_s: tf / v as f64,
            ..PassCost::default()
        },
        bwd: PassCost {
            compute_s: tb / v as f64,
            ..PassCost::default()
        },
        activation_bytes: act,
        ..ChunkWork::default()
    };
    (0..p)
        .map(|i| StageWork {
            stage_idx: i,
            chunks: vec![chunk.clone(); v as usize],
            p2p_s: 0.0,
            dp_reduce_s: 0.0,
            optimizer_s: 0.0,
            memory: memory::MemoryBytes::default(),
        })
        .collect()
}

fn run(stages: &[StageWork], schedule: Schedule, m: u64) -> Simulation {
    let pipe = Pipeline {
        stages,
        schedule,
        n_micro: m,
        grad_sync: GradSync::AfterDrain,
    };
    simulate(&pipe, false).unwrap()
}

/// A bare plan with the pipeline shape the memory formula reads.
fn shape(schedule: Schedule, p: u64, m: u64, v: u64) -> Plan {
    let mut plan = Plan::new(1, 1, p, 1, m, 2048);
    plan.vpp = v;
    plan.schedule = schedule;
    plan
}

/// A seeded sweep of (schedule, p, m, v, t_f, t_b) with uniform stages and no
/// communication, where the closed forms hold.
fn sweep() -> Vec<(Schedule, u64, u64, u64, f64, f64)> {
    let mut rng = Rng(0x5eed_2026);
    let mut out = Vec::new();
    for schedule in [Schedule::Gpipe, Schedule::OneFOneB, Schedule::Interleaved] {
        for _ in 0..40 {
            let p = rng.int(1, 12);
            let (p, v, m) = if schedule == Schedule::Interleaved {
                let p = p.max(2);
                (p, rng.int(2, 6), p * rng.int(1, 8))
            } else {
                (p, 1, rng.int(1, 48))
            };
            let tf = rng.real(0.5, 2.0);
            out.push((schedule, p, m, v, tf, tf * rng.real(1.0, 3.0)));
        }
    }
    out
}

/// Issue 5: the simulator equals the closed form, (m + p − 1)(t_f + t_b) for GPipe and
/// 1F1B and (m + (p − 1)/v)(t_f + t_b) interleaved (Narayanan et al. SC'21 §2.2), within 1%.
#[test]
fn simulator_equals_the_closed_form_on_uniform_stages() {
    for (schedule, p, m, v, tf, tb) in sweep() {
        let sim = run(&uniform(p, v, tf, tb, 1.0), schedule, m);
        let cf = step::pipeline_time(schedule, &vec![tf + tb; p as usize], m, v);
        let err = (sim.step_time_s - cf).abs() / cf;
        assert!(
            err < 0.01,
            "{schedule:?} p={p} m={m} v={v}: simulated {} vs closed form {cf}",
            sim.step_time_s
        );
        assert_eq!(sim.pipeline_s, sim.step_time_s);
    }
}

/// Issue 5: the 1F1B bubble is (p − 1)/(m + p − 1) on uniform stages; every stage is busy
/// m(t_f + t_b) and idle the rest.
#[test]
fn one_f_one_b_bubble_is_p_minus_1_over_m_plus_p_minus_1() {
    for (schedule, p, m, v, tf, tb) in sweep() {
        if schedule != Schedule::OneFOneB {
            continue;
        }
        let sim = run(&uniform(p, v, tf, tb, 1.0), schedule, m);
        let want = (p - 1) as f64 / (m + p - 1) as f64;
        for got in [sim.bubble_fraction, sim.mean_idle_fraction] {
            assert!((got - want).abs() < 1e-9, "p={p} m={m}: {got} vs {want}");
        }
        for s in &sim.stages {
            assert!((s.busy_s - m as f64 * (tf + tb)).abs() < 1e-9 * s.busy_s);
            assert!((s.idle_s - want * sim.step_time_s).abs() < 1e-9 * sim.step_time_s);
        }
    }
}

/// Issue 5: each stage's peak activations are `in_flight_chunks` stages' worth: m for
/// GPipe, min(p − i, m) for 1F1B, ((p − i − 1)·2 + (v − 1)·p + 1)/v interleaved.
#[test]
fn peak_activations_follow_the_in_flight_formula() {
    for (schedule, p, m, v, tf, tb) in sweep() {
        let act = 3.0e6;
        let sim = run(&uniform(p, v, tf, tb, act), schedule, m);
        let plan = shape(schedule, p, m, v);
        for s in &sim.stages {
            let want = memory::in_flight_chunks(&plan, s.stage_idx);
            assert_eq!(s.peak_in_flight, want, "{schedule:?} p={p} m={m} v={v}");
            // Stages' worth × v chunks × bytes per chunk.
            assert_eq!(s.peak_activation_bytes, want * v as f64 * act);
        }
    }
}

/// A chunk's own peak: with activations in chunk 0 only (where the embedding runs), the
/// simulator's peak on every stage is `chunk_in_flight(…, 0)` micro-batches of them — above the
/// stage's average under interleaving. Hand-derived: p = 4, v = 2, m = 8, stage 0's 10
/// warm-up forwards hold chunk 0's micro-batches 0–5 and chunk 1's 0–3; the steady state then
/// runs chunk 0's forwards of 6 and 7 while its backwards are chunk 1's: all 8 chunk-0
/// micro-batches are held, against 5.5 stages' worth on average.
#[test]
fn first_chunk_holds_its_own_in_flight_count() {
    let plan = shape(Schedule::Interleaved, 4, 8, 2);
    assert_eq!(memory::chunk_in_flight(&plan, 0, 0), 8.0);
    assert_eq!(memory::in_flight_chunks(&plan, 0), 5.5);
    for (schedule, p, m, v, tf, tb) in sweep() {
        let mut st = uniform(p, v, tf, tb, 0.0);
        for s in &mut st {
            s.chunks[0].activation_bytes = 1.0;
        }
        let sim = run(&st, schedule, m);
        let plan = shape(schedule, p, m, v);
        for s in &sim.stages {
            let want = memory::chunk_in_flight(&plan, s.stage_idx, 0);
            assert_eq!(
                s.peak_activation_bytes, want,
                "{schedule:?} p={p} m={m} v={v} stage {}",
                s.stage_idx
            );
        }
    }
}

/// Chunks of different sizes (the embedding and loss slots, dense and MoE layers, a chunk
/// recomputed): the simulator's peak on every stage is `peak_chunk_bytes` of them, the largest
/// over the schedule's period of what the chunks hold at once. Chunk c keeps 1 + c² + the
/// stage's index bytes per micro-batch, so no two chunks weigh the same. Hand-derived on p = 4,
/// v = 2, m = 8, stage 0, chunks of 1 and 2 bytes: its W = 3·2 + 4 = 10 warm-up forwards and
/// the next run chunk 0 on micro-batches 0–3, chunk 1 on 0–3, chunk 0 on 4–6: 7 chunk-0 and 4
/// chunk-1 micro-batches held, 7·1 + 4·2 = 15 bytes (the steady state then trades chunk-1
/// backwards for forwards: 8·1 + 3·2 = 14). The stage-average formula had said its 11
/// chunk-passes at 1.5 bytes, 16.5.
#[test]
fn unequal_chunks_peak_as_the_simulator_holds_them() {
    let plan = shape(Schedule::Interleaved, 4, 8, 2);
    assert_eq!(memory::peak_chunk_bytes(&plan, 0, &[1.0, 2.0]), 15.0);
    assert_eq!(memory::in_flight_chunks(&plan, 0) * 3.0, 16.5);
    for (schedule, p, m, v, tf, tb) in sweep() {
        let mut st = uniform(p, v, tf, tb, 0.0);
        for s in &mut st {
            for (c, w) in s.chunks.iter_mut().enumerate() {
                w.activation_bytes = 1.0 + (c * c) as f64 + s.stage_idx as f64;
            }
        }
        let sim = run(&st, schedule, m);
        let plan = shape(schedule, p, m, v);
        for (s, work) in sim.stages.iter().zip(&st) {
            let bytes: Vec<f64> = work.chunks.iter().map(|w| w.activation_bytes).collect();
            let want = memory::peak_chunk_bytes(&plan, s.stage_idx, &bytes);
            assert_eq!(
                s.peak_activation_bytes, want,
                "{schedule:?} p={p} m={m} v={v} stage {}",
                s.stage_idx
            );
        }
    }
}

/// Hand-derived timeline with pipeline sends: p = 2, m = 1, t_f = 1, t_b = 2, a send takes
/// 0.5. Stage 0 forwards [0, 1] and sends [1, 1.5]; stage 1 forwards [1.5, 2.5], backwards
/// [2.5, 4.5] and sends [4.5, 5]; stage 0 backwards [5, 7]. Each stage is busy 3 s and
/// blocked 0.5 s of the 7: bubble 1 − 7/14.
#[test]
fn sends_delay_the_receiver_and_hold_the_sender() {
    let mut st = uniform(2, 1, 1.0, 2.0, 1.0);
    for s in &mut st {
        s.p2p_s = 0.5;
    }
    let sim = run(&st, Schedule::OneFOneB, 1);
    assert_eq!(sim.step_time_s, 7.0);
    assert_eq!((sim.bubble_fraction, sim.mean_idle_fraction), (0.5, 0.5));
    assert_eq!((sim.stages[0].busy_s, sim.stages[0].p2p_s), (3.0, 0.5));
    assert_eq!(sim.stages[1].idle_s, 3.5);
}

/// Gradient reduction and the optimizer, p = 2, m = 4, t_f = 1, t_b = 2: the pipeline
/// drains at (4 + 1)·3 = 15, stage 1 two seconds earlier. Reducing 1.5 s after the drain
/// gives 16.5; overlapped with the last backward (13..15) it hides completely. A 3 s
/// reduction overlapped ends at 13 + 3 = 16, at 18 without overlap. The optimizer (0.25 s)
/// follows on every stage.
#[test]
fn gradient_reduction_overlaps_only_when_asked() {
    for (dp, overlap, want) in [
        (1.5, false, 16.5),
        (1.5, true, 15.0),
        (3.0, true, 16.0),
        (3.0, false, 18.0),
    ] {
        let mut st = uniform(2, 1, 1.0, 2.0, 1.0);
        for s in &mut st {
            s.dp_reduce_s = dp;
            s.chunks[0].dp_reduce_s = dp;
            s.optimizer_s = 0.25;
        }
        let pipe = Pipeline {
            stages: &st,
            schedule: Schedule::OneFOneB,
            n_micro: 4,
            grad_sync: if overlap {
                GradSync::WithLastBackward
            } else {
                GradSync::AfterDrain
            },
        };
        let sim = simulate(&pipe, false).unwrap();
        assert_eq!(sim.pipeline_s, 15.0);
        assert_eq!(sim.step_time_s, want + 0.25, "dp {dp} overlap {overlap}");
        assert_eq!(sim.dp_exposed_s, want - 15.0);
    }
}

/// The overlapped reduction slows the backward beside it by a quarter of the time they share
/// (interference 0.25), and the last micro-batch's backward carries the delay down the
/// pipeline. p = 2, m = 4, t_f = 1, t_b = 2, undisturbed drain at 15. A 1.5 s reduction:
/// stage 1's last backward (11..13) ends 0.375 late, stage 0's (then 13.375..15.375) another
/// 0.375 late: 15.75. A 3 s reduction: stage 1's backward ends at 13.5; stage 0's runs
/// 13.5..16 and its reduction 13.5..16.5. The closed form (`stages::dp_exposed_s`) agrees.
#[test]
fn overlapped_reduction_slows_the_backward_down_the_pipeline() {
    for (dp, want) in [(1.5, 15.75), (3.0, 16.5)] {
        let mut st = uniform(2, 1, 1.0, 2.0, 1.0);
        for s in &mut st {
            s.dp_reduce_s = dp;
            s.chunks[0].dp_reduce_s = dp;
            s.chunks[0].overlap_interference = 0.25;
        }
        let pipe = Pipeline {
            stages: &st,
            schedule: Schedule::OneFOneB,
            n_micro: 4,
            grad_sync: GradSync::WithLastBackward,
        };
        let sim = simulate(&pipe, false).unwrap();
        assert_eq!(sim.step_time_s, want, "dp {dp}");
        let closed = dp_exposed_with_s(GradSync::WithLastBackward, &st);
        assert_eq!(15.0 + closed, want, "dp {dp}");
    }
}

fn gpt3_plan(schedule: Schedule, vpp: u64) -> (ModelSpec, ClusterSpec, Plan) {
    let model = load_model("gpt3-175b").unwrap();
    let cluster = load_cluster("a100-80g-x1024").unwrap();
    let mut plan = shape(schedule, 16, 1536, vpp);
    plan.dp = 8;
    plan.tp = 8;
    plan.recompute = Recompute::Selective;
    plan.sequence_parallel = true;
    plan.zero = 1;
    (model, cluster, plan)
}

/// GPT-3 175B on 1024 A100s (tp 8, pp 16, dp 8, 192 micro-batches): the simulated step is
/// within 1% of the closed form, and each stage's simulated peak memory is the closed form's
/// (same in-flight count, same bytes) — interleaved too, where stage 0's embedding is held for
/// its own chunk's micro-batches, not the stage's average (`memory::chunk_in_flight`; the
/// closed form had read 0.6 GiB less).
#[test]
fn gpt3_simulation_agrees_with_the_estimate() {
    for (schedule, v) in [(Schedule::OneFOneB, 1), (Schedule::Interleaved, 2)] {
        let (model, cluster, plan) = gpt3_plan(schedule, v);
        let ps = simulate_plan(&model, &cluster, None, &plan, false).unwrap();
        let (sim, est) = (&ps.sim, &ps.estimate);
        assert_eq!(sim.n_micro, 192);
        let err = (sim.step_time_s - est.step_time_s).abs() / est.step_time_s;
        assert!(
            err < 0.01,
            "{schedule:?}: {} vs {}",
            sim.step_time_s,
            est.step_time_s
        );
        for (s, e) in sim.stages.iter().zip(&est.stages) {
            let (a, b) = (s.peak_memory_gib, e.memory_gib);
            assert!(
                (a - b).abs() < 1e-9 * b,
                "{schedule:?} stage {}: {a} vs {b}",
                s.stage_idx
            );
        }
    }
}

/// A pipeline whose last stage sets the pace (Llama 3 8B's 128,256-word head on 2 of 32
/// layers, tp 8, pp 16, 128 H100s) under both frameworks: the end stages send once per
/// micro-batch, not twice, and the closed form charges them that. It had been 2.6% slower
/// than the simulator under DeepSpeed (whose blocking receive and send make a pass twice a
/// transfer) and 0.9% under Megatron; now both agree within 0.1%.
#[test]
fn end_stages_send_once_per_micro_batch() {
    let model = load_model("llama3-8b").unwrap();
    let cluster = load_cluster("h100-x1024").unwrap().with_gpus(128).unwrap();
    for framework in [Framework::DeepSpeed, Framework::Megatron] {
        let mut plan = Plan::new(1, 8, 16, 1, 128, 8192);
        plan.framework = framework;
        let ps = simulate_plan(&model, &cluster, None, &plan, false).unwrap();
        let (sim, est) = (ps.sim.step_time_s, ps.estimate.step_time_s);
        assert!(
            (sim / est - 1.0).abs() < 1e-3,
            "{framework:?}: {sim} vs {est}"
        );
        let ends: Vec<f64> = [0, 15].map(|i| ps.estimate.stages[i].fwd_s).to_vec();
        assert!(ends[1] > ends[0], "the last stage is the slowest: {ends:?}");
    }
}

/// Uneven stages with per-stage recomputation (`stage_layers`, `recompute_layers`): each
/// stage's simulated peak memory is still the closed form's under 1F1B. The closed form
/// Σ t_i + (m − 1)·max t_i charges every other stage's full time for fill and drain; here the
/// slowest stage is an early one (it recomputes most), whose warm-up forwards overlap the
/// later stages' fill, so the simulation is faster — but never below the slowest stage's
/// own m·t_max.
#[test]
fn uneven_stages_keep_memory_and_time() {
    let (model, cluster, mut plan) = gpt3_plan(Schedule::OneFOneB, 1);
    plan.pp = 4;
    plan.dp = 32;
    plan.global_batch = 1024;
    plan.stage_layers = Some(vec![23, 24, 24, 25]);
    plan.recompute = Recompute::Full;
    plan.recompute_layers = Some(vec![23, 12, 6, 0]);
    let ps = simulate_plan(&model, &cluster, None, &plan, false).unwrap();
    let (sim, est) = (&ps.sim, &ps.estimate);
    let slowest = est
        .stages
        .iter()
        .map(|s| s.fwd_s + s.bwd_s)
        .fold(0.0, f64::max);
    let floor = sim.n_micro as f64 * slowest;
    assert!(
        sim.step_time_s < est.step_time_s,
        "{} vs {}",
        sim.step_time_s,
        est.step_time_s
    );
    assert!(
        sim.pipeline_s > 0.99 * floor,
        "{} vs {floor}",
        sim.pipeline_s
    );
    for (s, e) in sim.stages.iter().zip(&est.stages) {
        let (a, b) = (s.peak_memory_gib, e.memory_gib);
        assert!(
            (a - b).abs() < 1e-9 * b,
            "stage {}: {a} vs {b}",
            s.stage_idx
        );
    }
}

/// Same input, same output, trace included.
#[test]
fn simulation_is_deterministic() {
    let (model, cluster, plan) = gpt3_plan(Schedule::Interleaved, 3);
    let a = simulate_plan(&model, &cluster, None, &plan, true).unwrap();
    let b = simulate_plan(&model, &cluster, None, &plan, true).unwrap();
    assert_eq!(a.sim, b.sim);
    let (ta, tb) = (a.sim.trace.unwrap(), b.sim.trace.unwrap());
    assert_eq!(ta.to_json(), tb.to_json());
}

/// Plans the schedule cannot run are errors naming the fix, not panics.
#[test]
fn bad_plans_are_errors() {
    let (model, cluster, mut plan) = gpt3_plan(Schedule::Interleaved, 2);
    plan.global_batch = 8 * 24;
    let e = simulate_plan(&model, &cluster, None, &plan, false).unwrap_err();
    assert!(e.to_string().contains("multiple of pp=16"), "{e}");
    let st = uniform(2, 2, 1.0, 2.0, 1.0);
    let e = simulate(
        &Pipeline {
            stages: &st,
            schedule: Schedule::OneFOneB,
            n_micro: 4,
            grad_sync: GradSync::AfterDrain,
        },
        false,
    );
    assert!(matches!(e, Err(SimError::Chunks { expected: 1, .. })));
}

/// Megatron-LM's aligned grad sync (`GradSync::Aligned`), the case above with the 3 s
/// reduction: stage 0 still reduces during its last backward (13..15, slowed 0.25 × 2 = 0.5
/// s), but stage 1 waits for its own last backward to end (13) and then runs beside no
/// compute of its own: both reductions end at 16, the drain at 15.5.
#[test]
fn aligned_grad_sync_reduces_later_stages_in_the_drain() {
    let mut st = uniform(2, 1, 1.0, 2.0, 1.0);
    for s in &mut st {
        s.dp_reduce_s = 3.0;
        s.chunks[0].dp_reduce_s = 3.0;
        s.chunks[0].overlap_interference = 0.25;
    }
    let pipe = Pipeline {
        stages: &st,
        schedule: Schedule::OneFOneB,
        n_micro: 4,
        grad_sync: GradSync::Aligned,
    };
    let sim = simulate(&pipe, false).unwrap();
    assert_eq!((sim.pipeline_s, sim.step_time_s), (15.5, 16.0));
    assert_eq!(15.0 + dp_exposed_with_s(GradSync::Aligned, &st), 16.0);
}

/// Interleaved 1F1B, p = 2, v = 2, m = 4, each chunk 1 s forward and 2 s backward, each
/// chunk's reduction `d` overlapped (no interference). Stage 0 ends the pipeline at 27: the
/// last group's backwards run chunk 1 (mb 2 at 18..20, mb 3 at 21..23), then chunk 0 (mb 2
/// at 23..25, mb 3 at 25..27); stage 1 runs chunk 1's mb 3 at 19..21 and chunk 0's at
/// 21..23 and 23..25.
/// - With each chunk's last backward: stage 0's chunk 1 reduces from 21 to 21 + d, chunk 0
///   queues behind it from max(25, 21 + d): 28, 33, 41 for d = 3, 6, 10 (1, 6 and 14 s past
///   the pipeline). Pricing the stage's whole 2d against one micro-batch's 4 s backward, as
///   the closed form once did, gave 2, 8 and 16.
/// - Aligned (Megatron-LM): a chunk's reduction is issued after the backward `rank` steps
///   past its last one, chunk 0's once the stage is done. Stage 0: chunk 1 from 23, chunk 0
///   from max(27, 23 + d): 30, 35, 43. Stage 1: chunk 1 from 23 (after chunk 0's mb 2),
///   chunk 0 from max(25, 23 + d): 29, 35, 43. Past the pipeline: 3, 8, 16.
#[test]
fn interleaved_chunks_reduce_after_their_own_last_backward() {
    let cases = [
        (GradSync::WithLastBackward, [1.0, 6.0, 14.0]),
        (GradSync::Aligned, [3.0, 8.0, 16.0]),
    ];
    for (sync, want) in cases {
        for (d, want) in [3.0, 6.0, 10.0].into_iter().zip(want) {
            let mut st = uniform(2, 2, 2.0, 4.0, 1.0);
            for s in &mut st {
                s.dp_reduce_s = 2.0 * d;
                for c in &mut s.chunks {
                    c.dp_reduce_s = d;
                }
            }
            let pipe = Pipeline {
                stages: &st,
                schedule: Schedule::Interleaved,
                n_micro: 4,
                grad_sync: sync,
            };
            let sim = simulate(&pipe, false).unwrap();
            assert_eq!(
                (sim.pipeline_s, sim.dp_exposed_s),
                (27.0, want),
                "{sync:?} d {d}"
            );
            assert_eq!(dp_exposed_with_s(sync, &st), want, "{sync:?} d {d}");
        }
    }
}

/// The closed form against the simulator with interference on interleaved pipelines (2
/// chunks; p = 2, 3, 4; each chunk's reduction 1 to 8 s against its 2 s backward): within 2%
/// at the presets' ι = 0.16 under both overlapped issue rules, and never below the simulator
/// under Megatron-LM's aligned sync, even at ι = 0.5. (Issued with each chunk's own last
/// backward, early slowdowns also delay the stages below earlier in the drain, which the
/// closed form leaves out: at ι = 0.5 it reads up to 5% low there.)
#[test]
fn closed_form_follows_the_simulator_with_interference() {
    for (p, m) in [(2u64, 4u64), (4, 8), (3, 9)] {
        for sync in [GradSync::WithLastBackward, GradSync::Aligned] {
            for iota in [0.16, 0.5] {
                for d in [1.0, 2.0, 4.0, 8.0] {
                    let mut st = uniform(p, 2, 2.0, 4.0, 1.0);
                    for s in &mut st {
                        s.dp_reduce_s = 2.0 * d;
                        for c in &mut s.chunks {
                            c.dp_reduce_s = d;
                            c.overlap_interference = iota;
                        }
                    }
                    let pipe = Pipeline {
                        stages: &st,
                        schedule: Schedule::Interleaved,
                        n_micro: m,
                        grad_sync: sync,
                    };
                    let sim = simulate(&pipe, false).unwrap().step_time_s;
                    let drained = Pipeline {
                        grad_sync: GradSync::AfterDrain,
                        ..pipe
                    };
                    let pipeline = simulate(&drained, false).unwrap().pipeline_s;
                    let ratio = (pipeline + dp_exposed_with_s(sync, &st)) / sim;
                    let case = format!("p {p} {sync:?} ι {iota} d {d}: {ratio}");
                    if iota == 0.16 {
                        assert!((ratio - 1.0).abs() <= 0.02, "{case}");
                    }
                    if sync == GradSync::Aligned {
                        assert!(ratio >= 1.0 - 1e-12, "{case}");
                    }
                }
            }
        }
    }
}
