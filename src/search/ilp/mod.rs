//! The search's integer linear programs (DESIGN.md §4): ILP 1 chooses each operator's
//! sharding on a (dp × tp) mesh (`sharding`, built from the cost model by `layouts`); ILP 2
//! partitions layers into pipeline stages and chooses per-stage recomputation (`partition`,
//! built from the cost model by `stages`; for Megatron plans solved over the splits it sets by
//! `megatron_split`). Both report status, objective and gap, and are
//! memoised by their inputs (`cache`). Solvers: microlp by default, HiGHS with
//! `--features highs` (`solve`).

pub mod bounds;
pub mod cache;
pub mod layouts;
mod megatron_split;
pub mod partition;
pub mod sharding;
mod solve;
pub mod stages;

pub use solve::{IlpError, IlpOptions, IlpReport, IlpStatus, Solver};

/// A small deterministic generator for the tests' random instances (SplitMix64, Steele et
/// al. 2014).
#[cfg(test)]
pub(crate) struct SplitMix(pub u64);

#[cfg(test)]
impl SplitMix {
    /// Next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in [lo, hi].
    pub fn int(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Solves `cases` random instances with microlp and HiGHS and asserts both reach the same
/// verdict and optimum (to 1e-6 relative).
#[cfg(all(test, feature = "highs"))]
pub(crate) fn assert_solvers_agree(
    cases: usize,
    mut solve: impl FnMut(&IlpOptions, &IlpOptions) -> (IlpReport, IlpReport),
) {
    let with = |solver| IlpOptions {
        solver,
        ..IlpOptions::default()
    };
    let (m, h) = (with(Solver::Microlp), with(Solver::Highs));
    for case in 0..cases {
        let (a, b) = solve(&m, &h);
        let infeasible = |r: &IlpReport| r.status == IlpStatus::Infeasible;
        assert_eq!(infeasible(&a), infeasible(&b), "case {case}");
        if !infeasible(&a) {
            let (x, y) = (a.objective, b.objective);
            assert!(
                (x - y).abs() <= 1e-6 * x.abs().max(1e-3),
                "case {case}: microlp {x} vs highs {y}"
            );
        }
    }
}
