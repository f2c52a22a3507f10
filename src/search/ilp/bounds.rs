//! What ILP 2's solver is told before it branches: the fewest recomputed layers each stage
//! needs to fit a given layer count, the smallest bottleneck any integral partition can reach
//! (a valid cut z ≥ z_min that closes most of the relaxation's gap), the partition with the
//! least pipeline time by dynamic programming (the warm start: branch and bound then only has
//! to settle the memory tie-break and prove the bound), and the layer counts no optimal
//! partition exceeds. None of these changes the optimum; they let branch and bound finish
//! quickly.

use super::partition::PartitionProblem;

/// A partition: layers and recomputed layers per stage.
pub type Counts = (Vec<u64>, Vec<u64>);

impl PartitionProblem {
    /// The fewest recomputed layers with which stage `i` fits `n` layers, if any (memory falls
    /// with each recomputed layer; more recomputation only costs time).
    pub fn min_recompute(&self, i: usize, n: u64) -> Option<u64> {
        let s = &self.stages[i];
        let top = if self.recompute { n } else { 0 };
        // Interleaved stages recompute all their layers or none (`stages::problem`).
        let whole = self.vpp > 1;
        (0..=top)
            .filter(|&r| !whole || r == 0 || r == n)
            .find(|&r| s.mem_bytes(n, r) <= self.capacity_bytes)
    }

    /// Stage `i`'s fastest time with `n` layers (at its fewest recomputed layers).
    pub fn best_time_s(&self, i: usize, n: u64) -> Option<f64> {
        Some(self.stages[i].time_s(n, self.min_recompute(i, n)?))
    }

    /// Layer counts stage `i` may hold: at least one (or the fixed count), at most what leaves
    /// one layer to every other stage.
    pub fn count_range(&self) -> (u64, u64) {
        match self.fixed_layers {
            Some(f) => (f, f),
            None => (1, self.layers + 1 - self.stages.len() as u64),
        }
    }

    /// The most layers stage `i` holds within time `z`, if it can hold the minimum.
    pub fn most_layers(&self, i: usize, z: f64) -> Option<u64> {
        let (lo, hi) = self.count_range();
        // Times grow with n, and the counts that fit memory are those up to a largest one.
        (lo..=hi)
            .take_while(|&n| self.best_time_s(i, n).is_some_and(|t| t <= z))
            .last()
    }

    /// The smallest bottleneck max_i T_i of any feasible partition, or `None` when none is
    /// feasible: the least stage time θ at which the stages together hold every layer.
    pub fn min_bottleneck_s(&self) -> Option<f64> {
        let (lo, hi) = self.count_range();
        let mut levels: Vec<f64> = (0..self.stages.len())
            .flat_map(|i| (lo..=hi).filter_map(move |n| self.best_time_s(i, n)))
            .collect();
        levels.sort_by(f64::total_cmp);
        levels.dedup();
        let holds = |z: f64| {
            let mut sum = 0;
            for i in 0..self.stages.len() {
                match self.most_layers(i, z) {
                    Some(n) => sum += n,
                    None => return false,
                }
            }
            sum >= self.layers
        };
        let k = levels.partition_point(|&z| !holds(z));
        levels.get(k).copied()
    }

    /// Each stage's candidates (layers, least recompute, time) from the fewest layers it may
    /// hold up to the most that fit.
    fn candidates(&self) -> Vec<Vec<(u64, u64, f64)>> {
        let (lo, hi) = self.count_range();
        (0..self.stages.len())
            .map(|i| {
                (lo..=hi)
                    .map_while(|n| {
                        let r = self.min_recompute(i, n)?;
                        Some((n, r, self.stages[i].time_s(n, r)))
                    })
                    .collect()
            })
            .collect()
    }

    /// The least Σ T_i over partitions whose stages all take at most `z`, by dynamic
    /// programming over stages and layers placed: (Σ T_i, layers per stage), or `None`.
    fn least_sum(&self, cands: &[Vec<(u64, u64, f64)>], z: f64) -> Option<(f64, Vec<u64>)> {
        let l = self.layers as usize;
        let mut best = vec![f64::INFINITY; l + 1];
        best[0] = 0.0;
        let mut pick = vec![vec![0u64; l + 1]; cands.len()];
        for (i, c) in cands.iter().enumerate() {
            let mut next = vec![f64::INFINITY; l + 1];
            for (j, &b) in best.iter().enumerate().filter(|(_, b)| b.is_finite()) {
                for &(n, _, t) in c.iter().filter(|c| c.2 <= z) {
                    let to = j + n as usize;
                    if to <= l && b + t < next[to] {
                        next[to] = b + t;
                        pick[i][to] = n;
                    }
                }
            }
            best = next;
        }
        if !best[l].is_finite() {
            return None;
        }
        let mut n = vec![0u64; cands.len()];
        let mut at = l;
        for i in (0..cands.len()).rev() {
            n[i] = pick[i][at];
            at -= n[i] as usize;
        }
        Some((best[l], n))
    }

    /// The partition minimising the pipeline time (m·v − 1)/v · max T_i + Σ T_i / v (all but
    /// the memory tie-break), exactly: for each bottleneck level θ from the smallest up, the
    /// least Σ T_i with every stage within θ, stopping once (m·v − 1)/v · θ alone exceeds the
    /// best found. The ILP's start; `None` when nothing fits.
    pub fn best_partition(&self) -> Option<Counts> {
        let cands = self.candidates();
        let z_min = self.min_bottleneck_s()?;
        let v = self.vpp.max(1) as f64;
        let a = (self.n_micro as f64 * v - 1.0) / v;
        let mut levels: Vec<f64> = cands
            .iter()
            .flatten()
            .map(|c| c.2)
            .filter(|&t| t >= z_min)
            .collect();
        levels.sort_by(f64::total_cmp);
        levels.dedup();
        let floor = self.least_sum(&cands, f64::INFINITY)?.0 / v;
        let mut best: Option<(f64, Vec<u64>)> = None;
        for z in levels {
            if best.as_ref().is_some_and(|b| a * z + floor >= b.0) {
                break;
            }
            if let Some((sum, n)) = self.least_sum(&cands, z) {
                let obj = a * z + sum / v;
                if best.as_ref().is_none_or(|b| obj < b.0) {
                    best = Some((obj, n));
                }
            }
        }
        let n = best?.1;
        let r = (0..n.len())
            .map(|i| self.min_recompute(i, n[i]))
            .collect::<Option<_>>()?;
        Some((n, r))
    }

    /// The largest bottleneck an optimal partition can have, given a feasible objective
    /// `incumbent`: (m·v − 1)/v · z + Σ T_i / v + tie ≤ incumbent with Σ T_i no less than the
    /// fixed times plus every layer at the cheapest stage's rate.
    pub fn max_bottleneck_s(&self, incumbent: f64) -> f64 {
        let v = self.vpp.max(1) as f64;
        let a = (self.n_micro as f64 * v - 1.0) / v;
        if a <= 0.0 {
            return f64::INFINITY;
        }
        let least = self
            .stages
            .iter()
            .map(|s| s.time_per_layer_s)
            .fold(f64::INFINITY, f64::min)
            .max(0.0);
        let floor: f64 =
            self.stages.iter().map(|s| s.time_fixed_s).sum::<f64>() + self.layers as f64 * least;
        // A hair above, so rounding never cuts off the incumbent itself.
        (incumbent - floor / v) / a * (1.0 + 1e-9) + 1e-12
    }
}
