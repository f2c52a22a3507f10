//! What ILP 2's solver is told before it branches: the fewest recomputed layers each stage
//! needs to fit a given layer count, the smallest bottleneck any integral partition can reach
//! (a valid cut z ≥ z_min that closes most of the relaxation's gap), a greedy partition at that
//! bottleneck (the warm start), and the layer counts no optimal partition exceeds. None of
//! these changes the optimum; they only let branch and bound prove it quickly.

use super::partition::PartitionProblem;

/// A partition: layers and recomputed layers per stage.
pub type Counts = (Vec<u64>, Vec<u64>);

impl PartitionProblem {
    /// The fewest recomputed layers with which stage `i` fits `n` layers, if any (memory falls
    /// with each recomputed layer; more recomputation only costs time).
    pub fn min_recompute(&self, i: usize, n: u64) -> Option<u64> {
        let s = &self.stages[i];
        let top = if self.recompute { n } else { 0 };
        (0..=top).find(|&r| s.mem_bytes(n, r) <= self.capacity_bytes)
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

    /// A feasible partition at bottleneck `z` (at least [`PartitionProblem::min_bottleneck_s`]):
    /// every stage filled to what `z` allows, then layers taken back where that saves the most
    /// time.
    pub fn greedy(&self, z: f64) -> Option<Counts> {
        let k = self.stages.len();
        let mut n: Vec<u64> = (0..k)
            .map(|i| self.most_layers(i, z))
            .collect::<Option<_>>()?;
        let lo = self.count_range().0;
        let mut extra = n.iter().sum::<u64>() - self.layers;
        while extra > 0 {
            let saving = |i: usize| {
                let now = self.best_time_s(i, n[i]).unwrap_or(f64::INFINITY);
                now - self.best_time_s(i, n[i] - 1).unwrap_or(f64::INFINITY)
            };
            let i = (0..k)
                .filter(|&i| n[i] > lo)
                .max_by(|&a, &b| saving(a).total_cmp(&saving(b)).then(b.cmp(&a)))?;
            n[i] -= 1;
            extra -= 1;
        }
        let r = (0..k)
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
