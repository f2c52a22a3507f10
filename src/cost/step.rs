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

#[cfg(test)]
mod tests {
    use super::*;

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
