//! The order in which one pipeline rank runs its forward and backward passes under GPipe,
//! 1F1B and interleaved 1F1B, as Megatron-LM's schedules issue them.

use super::SimError;
use crate::spec::Schedule;
use serde::Serialize;

/// Forward or backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Pass {
    /// Forward pass of one micro-batch through one model chunk.
    Fwd,
    /// Backward pass (after any recomputation).
    Bwd,
}

/// One pass of one micro-batch through one model chunk of a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Task {
    /// Forward or backward.
    pub pass: Pass,
    /// Model chunk on this stage (0 unless interleaved).
    pub chunk: u32,
    /// Micro-batch.
    pub mb: u32,
}

impl Task {
    /// The forward of micro-batch `mb` through chunk `chunk`.
    pub fn fwd(chunk: u32, mb: u32) -> Task {
        Task {
            pass: Pass::Fwd,
            chunk,
            mb,
        }
    }
    /// The backward of micro-batch `mb` through chunk `chunk`.
    pub fn bwd(chunk: u32, mb: u32) -> Task {
        Task {
            pass: Pass::Bwd,
            chunk,
            mb,
        }
    }
}

/// Forward passes stage `stage` of `p` runs before its first backward.
///
/// 1F1B: min(p − i − 1, m) (Megatron-LM `forward_backward_pipelining_without_interleaving`).
/// Interleaved: (p − i − 1)·2 + (v − 1)·p chunk passes, all m·v when that many or more
/// (Megatron-Core `forward_backward_pipelining_with_interleaving`, micro-batch groups of p).
/// GPipe: all of them.
pub fn warmup(schedule: Schedule, p: u64, stage: u64, m: u64, v: u64) -> u64 {
    match schedule {
        Schedule::Gpipe => m * v,
        Schedule::OneFOneB => (p - stage - 1).min(m),
        Schedule::Interleaved => ((p - stage - 1) * 2 + (v - 1) * p).min(m * v),
    }
}

/// The tasks stage `stage` of a `p`-stage pipeline runs, in order, for `m` micro-batches
/// and `v` chunks per stage (v = 1 unless interleaved).
///
/// GPipe runs every forward, then every backward in micro-batch order (Narayanan et al.
/// SC'21 Fig. 3, top). 1F1B and interleaved run their warm-up forwards, then alternate one
/// forward and one backward, then drain the remaining backwards. Interleaved forwards walk
/// Megatron's schedule table — chunk 0 for micro-batches 0..p, chunk 1 for the same p, …,
/// then the next group of p — and backwards walk it with the chunks reversed.
pub fn order(
    schedule: Schedule,
    p: u64,
    stage: u64,
    m: u64,
    v: u64,
) -> Result<Vec<Task>, SimError> {
    let v = if schedule == Schedule::Interleaved {
        v
    } else {
        1
    };
    if schedule == Schedule::Interleaved && m % p != 0 {
        return Err(SimError::InterleavedMicroBatches { n_micro: m, pp: p });
    }
    let total = (m * v) as usize;
    let table: Vec<(u32, u32)> = (0..m * v)
        .map(|k| {
            if schedule != Schedule::Interleaved {
                return (k as u32, 0);
            }
            // Virtual micro-batch k: group k/(p·v), chunk (k mod p·v)/p, micro-batch
            // group·p + k mod p.
            let (group, within) = (k / (p * v), k % (p * v));
            ((group * p + within % p) as u32, (within / p) as u32)
        })
        .collect();
    let fwd = |k: usize| Task::fwd(table[k].1, table[k].0);
    let bwd = |k: usize| Task::bwd(v as u32 - 1 - table[k].1, table[k].0);
    let w = warmup(schedule, p, stage, m, v) as usize;
    let mut out = Vec::with_capacity(2 * total);
    out.extend((0..w).map(fwd));
    for k in 0..total - w {
        out.push(fwd(k + w));
        out.push(bwd(k));
    }
    out.extend((total - w..total).map(bwd));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Schedule::*;

    fn show(tasks: &[Task]) -> String {
        tasks
            .iter()
            .map(|t| {
                let p = if t.pass == Pass::Fwd { 'F' } else { 'B' };
                format!("{p}{}.{}", t.mb, t.chunk)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// 1F1B with p = 4, m = 6: stage 0 warms up with 3 forwards, stage 3 with none
    /// (Narayanan et al. SC'21 Fig. 4, top).
    #[test]
    fn one_f_one_b_orders() {
        let s0 = order(OneFOneB, 4, 0, 6, 1).unwrap();
        assert_eq!(
            show(&s0),
            "F0.0 F1.0 F2.0 F3.0 B0.0 F4.0 B1.0 F5.0 B2.0 B3.0 B4.0 B5.0"
        );
        let s3 = order(OneFOneB, 4, 3, 6, 1).unwrap();
        assert_eq!(
            show(&s3),
            "F0.0 B0.0 F1.0 B1.0 F2.0 B2.0 F3.0 B3.0 F4.0 B4.0 F5.0 B5.0"
        );
    }

    /// Interleaved with p = 2, v = 2, m = 4: stage 0 warms up with (2−0−1)·2 + 1·2 = 4
    /// chunk passes, stage 1 with 2; backwards start from the last chunk.
    #[test]
    fn interleaved_orders_follow_megatron_table() {
        let s0 = order(Interleaved, 2, 0, 4, 2).unwrap();
        assert_eq!(
            show(&s0),
            "F0.0 F1.0 F0.1 F1.1 F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0 B2.1 B3.1 B2.0 B3.0"
        );
        let s1 = order(Interleaved, 2, 1, 4, 2).unwrap();
        assert_eq!(&show(&s1)[..24], "F0.0 F1.0 F0.1 B0.1 F1.1");
        assert_eq!(
            order(Interleaved, 4, 0, 6, 2),
            Err(SimError::InterleavedMicroBatches { n_micro: 6, pp: 4 })
        );
    }

    /// Every schedule runs each (chunk, micro-batch) forward once and backward once, the
    /// forward first.
    #[test]
    fn every_pass_runs_once_forward_first() {
        for (s, v) in [(Gpipe, 1), (OneFOneB, 1), (Interleaved, 3)] {
            for p in 1..6 {
                for m in (p..4 * p).step_by(p as usize) {
                    for i in 0..p {
                        let o = order(s, p, i, m, v).unwrap();
                        assert_eq!(o.len() as u64, 2 * m * v);
                        for (k, t) in o.iter().enumerate() {
                            let twin = Task {
                                pass: Pass::Fwd,
                                ..*t
                            };
                            let first = o.iter().position(|x| *x == twin).unwrap();
                            assert!(first <= k, "{s:?} p={p} m={m} stage {i}: {}", show(&o));
                            assert_eq!(o.iter().filter(|x| *x == t).count(), 1);
                        }
                    }
                }
            }
        }
    }
}
