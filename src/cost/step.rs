//! Closed forms for the time of one pipelined step (DESIGN.md §3 "Step time").

use crate::spec::Schedule;

/// Time for `m` micro-batches to pass a pipeline whose stage `i` needs `t[i]` seconds per
/// micro-batch (forward + backward), `v` model chunks per stage when interleaved.
///
/// Uniform stages give (m + p − 1)·t for GPipe and 1F1B, (m + (p − 1)/v)·t interleaved
/// (Narayanan et al. SC'21 §2.2). Non-uniform stages: the fill and drain pass each stage
/// once, and the steady state runs at the slowest stage's pace:
/// Σ t_i/v + (m·v − 1)·max t_i / v (v = 1 without interleaving).
pub fn pipeline_time(schedule: Schedule, t: &[f64], m: u64, v: u64) -> f64 {
    let max = t.iter().copied().fold(0.0, f64::max);
    let sum: f64 = t.iter().sum();
    if t.len() <= 1 {
        return m as f64 * max;
    }
    let v = if schedule == Schedule::Interleaved {
        v.max(1) as f64
    } else {
        1.0
    };
    sum / v + (m as f64 * v - 1.0) * max / v
}

/// GPipe (Huang et al. 2019) with stage `i` taking `f[i]` forward and `b[i]` backward per
/// micro-batch: all `m` forwards flow through the stages, then all backwards back. Each phase
/// is a flow shop of identical jobs, whose makespan is the sum of the stage times plus (m − 1)
/// of the slowest: Σ (f_i + b_i) + (m − 1)·(max f + max b). With uniform stages this is
/// (m + p − 1)·(f + b), as [`pipeline_time`]; when the slowest forward and the slowest
/// backward are on different stages it exceeds (m − 1)·max(f + b), which under-counted it.
pub fn gpipe_time(f: &[f64], b: &[f64], m: u64) -> f64 {
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let sum: f64 = f.iter().chain(b).sum();
    sum + (m.max(1) - 1) as f64 * (max(f) + max(b))
}

/// Seconds a collective of `comm` seconds adds to the compute stream when issued beside
/// `window` seconds of compute, with `idle` further seconds in which the rank computes nothing
/// yet the collective may still run (a pipeline stage waiting for its drain).
///
/// While the collective runs, compute keeps `1 − ι` of its rate (`ι` =
/// `DeviceEfficiency::overlap_interference`: the collective's kernels hold SMs and HBM
/// bandwidth; Lee et al. 2025, arXiv:2507.03114, measured 18.9% slower compute on average).
/// If the compute outlasts the collective (`comm·(1 − ι) < window`) it ends `ι·comm` late;
/// otherwise it ends at `window/(1 − ι)`, while the collective runs on to `comm`, past the
/// idle time: `max(window·ι/(1 − ι), comm − window − idle)`. The two meet where
/// `comm·(1 − ι) = window`. `ι = 0` is perfect overlap, `max(0, comm − window − idle)`; `ι = 1`
/// (compute stalls while a collective runs) is none, `comm` — how the verify backends run a
/// rank's communication, after its compute on one stream.
pub fn overlap_exposed_s(comm: f64, window: f64, idle: f64, interference: f64) -> f64 {
    if interference >= 1.0 {
        return comm;
    }
    if comm * (1.0 - interference) < window {
        interference * comm
    } else {
        (window * interference / (1.0 - interference)).max(comm - window - idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ι = 0.16: a 10 ms collective beside 40 ms of compute costs 0.16 × 10 = 1.6 ms; beside
    /// 5 ms it is exposed 10 − 5 = 5 ms (the compute, done at 5/0.84 = 5.95 ms, ends first);
    /// at comm = window = 8 ms the compute outlasts it (8 × 0.84 < 8): 1.28 ms; a 12 ms
    /// collective over an 8 ms window with 3 ms idle after it: the compute ends at 8/0.84 =
    /// 9.524 ms, after the collective's 12 − 3 = 9 ms, so 1.524 ms. ι = 0 hides all but the
    /// excess; ι = 1 hides nothing.
    #[test]
    fn overlap_costs_the_interference_or_the_excess() {
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        close(overlap_exposed_s(10e-3, 40e-3, 0.0, 0.16), 1.6e-3);
        close(overlap_exposed_s(10e-3, 5e-3, 0.0, 0.16), 5e-3);
        close(overlap_exposed_s(8e-3, 8e-3, 0.0, 0.16), 1.28e-3);
        close(
            overlap_exposed_s(12e-3, 8e-3, 3e-3, 0.16),
            8e-3 * 0.16 / 0.84,
        );
        close(overlap_exposed_s(12e-3, 8e-3, 3e-3, 0.0), 1e-3);
        // ι = 1 exposes the whole collective, with or without compute or idle time beside it.
        close(overlap_exposed_s(2e-3, 0.0, 5e-3, 1.0), 2e-3);
        close(overlap_exposed_s(0.0, 8e-3, 0.0, 0.16), 0.0);
        close(overlap_exposed_s(12e-3, 8e-3, 3e-3, 1.0), 12e-3);
        close(overlap_exposed_s(5e-3, 8e-3, 0.0, 1.0), 5e-3);
    }

    /// Forwards 1, 2, 1 s and backwards 3, 1, 1 s over 4 micro-batches: 9 s through every
    /// stage once, then 3 more of the slowest forward (2) and the slowest backward (3): 24 s,
    /// where max(f + b) = 4 gave 21. Uniform stages give (m + p − 1)·(f + b).
    #[test]
    fn gpipe_waits_for_the_slowest_forward_and_backward() {
        assert_eq!(gpipe_time(&[1.0, 2.0, 1.0], &[3.0, 1.0, 1.0], 4), 24.0);
        assert_eq!(
            gpipe_time(&[1.0; 4], &[2.0; 4], 8),
            pipeline_time(Schedule::Gpipe, &[3.0; 4], 8, 1)
        );
    }

    #[test]
    fn uniform_pipelines_match_narayanan() {
        // p = 4, m = 8, t = 1: (8 + 3)·1 = 11 for 1F1B; interleaved v = 2: 8 + 3/2 = 9.5.
        assert_eq!(pipeline_time(Schedule::OneFOneB, &[1.0; 4], 8, 1), 11.0);
        assert_eq!(pipeline_time(Schedule::Interleaved, &[1.0; 4], 8, 2), 9.5);
        assert_eq!(pipeline_time(Schedule::OneFOneB, &[2.0], 5, 1), 10.0);
    }

    #[test]
    fn slowest_stage_sets_the_pace() {
        // Stages 1, 2, 1: fill/drain 4, then 7 more micro-batches at 2 s each.
        assert_eq!(
            pipeline_time(Schedule::OneFOneB, &[1.0, 2.0, 1.0], 8, 1),
            4.0 + 14.0
        );
    }
}
