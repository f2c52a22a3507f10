//! ILP 2 restricted to the stage partitions and recomputation Megatron-LM can launch
//! ([`PartitionProblem::megatron_form`]): few enough assignments to price every one.

use super::partition::{self, Partition, PartitionProblem};
use super::{IlpOptions, IlpReport, IlpStatus};

/// The optimum among the assignments Megatron-LM can launch
/// ([`PartitionProblem::megatron_form`]), by enumeration: they are few (the first stage's
/// layers f, the middle stages' m and the last's l with f + (p − 2)·m + l = L, and the
/// recompute count N), so every one is priced, exactly, without a solver. For given counts
/// the least N with which every stage fits is best (more only adds recomputation, which the
/// tie-break never pays for), starting from the largest of the stages' own least counts.
pub(super) fn solve(p: &PartitionProblem, opts: &IlpOptions) -> Partition {
    let k = p.stages.len() as u64;
    let lo = p.min_layers();
    let mut best: Option<(f64, Vec<u64>, Vec<u64>)> = None;
    let mut consider = |n: Vec<u64>| {
        let least = (0..n.len()).map(|i| p.min_recompute(i, n[i]));
        let Some(start) = least
            .collect::<Option<Vec<u64>>>()
            .map(|r| r.into_iter().max())
        else {
            return;
        };
        let top = if p.recompute {
            n.iter().copied().max().unwrap_or(0)
        } else {
            0
        };
        // The objective refuses the counts Megatron cannot set (partial ones with virtual
        // stages): the next N is tried.
        for big_n in start.unwrap_or(0)..=top {
            let r: Vec<u64> = n.iter().map(|&x| big_n.min(x)).collect();
            if let Some(t) = p.objective(&n, &r) {
                if best.as_ref().is_none_or(|b| t < b.0) {
                    best = Some((t, n.clone(), r));
                }
                break;
            }
        }
    };
    match k {
        0 => {}
        1 => consider(vec![p.layers]),
        _ => {
            // f + (k − 2)·m + l = L with every count at least `lo`.
            let middle = k - 2;
            let ms: Vec<u64> = if middle == 0 {
                vec![0]
            } else {
                (lo..)
                    .take_while(|&m| middle * m + 2 * lo <= p.layers)
                    .collect()
            };
            for m in ms {
                let rest = p.layers.saturating_sub(middle * m);
                for f in lo..=rest.saturating_sub(lo) {
                    let mut n = vec![m; k as usize];
                    (n[0], n[k as usize - 1]) = (f, rest - f);
                    consider(n);
                }
            }
        }
    }
    let Some((objective, n, r)) = best else {
        return partition::infeasible(opts);
    };
    // Every assignment priced: proven optimal, with no solver variables.
    let report = IlpReport {
        solver: opts.solver,
        status: IlpStatus::Optimal,
        objective,
        best_bound: objective,
        gap: 0.0,
        variables: 0,
        constraints: 0,
    };
    partition::answer(p, n, r, report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::ilp::SplitMix;
    use crate::search::ilp::partition::{brute_force, random};

    /// Restricted to what Megatron-LM launches (first and last stage free, the middle ones
    /// equal, one recompute count N with r_i = min(N, n_i)), the enumeration's optimum equals
    /// brute force over the same assignments on 120 seeded random instances, and is never
    /// better than the unrestricted optimum.
    #[test]
    fn megatron_form_optimum_equals_brute_force() {
        let mut rng = SplitMix(0x3E6A);
        let (mut feasible, mut uneven, mut partial, mut dearer) = (0, 0, 0, 0);
        for case in 0..120 {
            let mut p = random(&mut rng);
            let free = brute_force(&p);
            p.megatron = true;
            let got = partition::solve(&p, &IlpOptions::default()).unwrap();
            match brute_force(&p) {
                None => assert!(got.stage_layers.is_empty(), "case {case}: {got:?} {p:?}"),
                Some((best, n, r)) => {
                    feasible += 1;
                    let (gn, gr) = (&got.stage_layers, &got.recompute_layers);
                    assert!(p.megatron_form(gn, gr), "case {case}: {gn:?} {gr:?}");
                    let t = p.objective(gn, gr).expect("feasible");
                    assert!(
                        (t - best).abs() <= 1e-9 * best,
                        "case {case}: {t} vs {best} {n:?} {r:?}"
                    );
                    let unrestricted = free.as_ref().expect("a restricted answer is one").0;
                    assert!(unrestricted <= best * (1.0 + 1e-12), "case {case}");
                    dearer += usize::from(unrestricted < best * (1.0 - 1e-9));
                    uneven += usize::from(n.iter().any(|&x| x != n[0]));
                    partial += usize::from(r.iter().zip(&n).any(|(r, n)| *r > 0 && r < n));
                }
            }
        }
        assert!(feasible >= 70, "{feasible}");
        assert!(
            uneven >= 20 && partial >= 5 && dearer >= 5,
            "{uneven} {partial} {dearer}"
        );
    }
}
