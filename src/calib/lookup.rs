//! What the cost model asks a profile: GEMM throughput of a shape and the time of a
//! collective, each with where the number came from (measured, interpolated, extrapolated).

use super::Source;
use super::profile::{CollectiveFit, GemmPoint, Profile, Span, bus_factor};
use crate::graph::Coll;
use crate::units::Dtype;

/// Measured points that take part in one GEMM interpolation.
const GEMM_NEIGHBOURS: usize = 4;

/// A shape within this log-space distance of a measured point, and inside the measured
/// range in every dimension, counts as interpolated: ln 4, i.e. about a factor 4 off in one
/// dimension (or 2.2 in each of three). Farther, it is extrapolated.
const GEMM_NEAR: f64 = 1.386_294_361_119_890_6;

/// A preset GEMM throughput model: FLOP/s of `batch` GEMMs m×n×k.
pub type PresetGemm<'a> = &'a dyn Fn(u64, u64, u64, u64) -> f64;

fn ln(x: u64) -> f64 {
    (x.max(1) as f64).ln()
}

fn log_distance(p: &GemmPoint, m: u64, n: u64, k: u64) -> f64 {
    let d = [ln(p.m) - ln(m), ln(p.n) - ln(n), ln(p.k) - ln(k)];
    (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
}

impl Profile {
    /// Achieved FLOP/s of `batch` GEMMs m×n×k in `dtype`, from the measured points of that
    /// type. `None` when there is none.
    ///
    /// The measured points correct the preset model rather than replace it: the answer is
    /// preset(shape) × the measured/preset ratio of the nearest points, that ratio
    /// interpolated in log-space over (m, n, k) by inverse-distance weighting (Shepard 1968)
    /// of its logarithm. So a thin or tiny GEMM far from the points keeps the preset's wave
    /// quantisation and roofline instead of inheriting a large GEMM's throughput, and the
    /// exact measured shape gives back its measurement. Source: measured for that exact
    /// single GEMM; interpolated inside the measured range and within `GEMM_NEAR` of a point;
    /// extrapolated otherwise.
    pub fn gemm_flops_s(
        &self,
        dtype: Dtype,
        batch: u64,
        m: u64,
        n: u64,
        k: u64,
        preset: PresetGemm,
    ) -> Option<(f64, Source)> {
        let pts: Vec<&GemmPoint> = self.gemm.iter().filter(|p| p.dtype == dtype).collect();
        if pts.is_empty() {
            return None;
        }
        let mut near: Vec<(f64, f64)> = pts
            .iter()
            .map(|p| {
                let ratio = p.flops_s() / preset(1, p.m, p.n, p.k);
                (log_distance(p, m, n, k), ratio.ln())
            })
            .collect();
        near.sort_by(|a, b| a.0.total_cmp(&b.0));
        let exact: Vec<f64> = near
            .iter()
            .take_while(|(d, _)| *d < 1e-12)
            .map(|x| x.1)
            .collect();
        let log_ratio = if exact.is_empty() {
            let (mut wsum, mut vsum) = (0.0, 0.0);
            for &(d, v) in near.iter().take(GEMM_NEIGHBOURS) {
                let w = 1.0 / (d * d);
                wsum += w;
                vsum += w * v;
            }
            vsum / wsum
        } else {
            let mut e = exact.clone();
            super::fit::median(&mut e)
        };
        let inside = [(m, 0), (n, 1), (k, 2)].iter().all(|&(x, i)| {
            let dim = |p: &&GemmPoint| [p.m, p.n, p.k][i];
            pts.iter().map(dim).min().unwrap_or(0) <= x
                && pts.iter().map(dim).max().unwrap_or(0) >= x
        });
        let src = if !exact.is_empty() && batch == 1 {
            Source::Measured
        } else if inside && near[0].0 <= GEMM_NEAR {
            Source::Interpolated
        } else {
            Source::Extrapolated
        };
        Some((preset(batch, m, n, k) * log_ratio.exp(), src))
    }

    /// Leave-one-out check of the GEMM surface: for every measured point, the relative error
    /// of predicting it from the other points of its type, (predicted − measured) / measured.
    pub fn gemm_loo_residuals(&self, preset: PresetGemm) -> Vec<(GemmPoint, Option<f64>)> {
        (0..self.gemm.len())
            .map(|i| {
                let p = &self.gemm[i];
                let mut rest = self.clone();
                rest.gemm.remove(i);
                rest.gemm
                    .retain(|q| (q.m, q.n, q.k, q.dtype) != (p.m, p.n, p.k, p.dtype));
                let r = rest
                    .gemm_flops_s(p.dtype, 1, p.m, p.n, p.k, preset)
                    .map(|(f, _)| f / p.flops_s() - 1.0);
                (p.clone(), r)
            })
            .collect()
    }

    /// Time of a collective from the fit of the same (op, ranks, span), or from the nearest
    /// rank count of the same op and span with its bandwidth term scaled by the bus-factor
    /// ratio (extrapolated). `None` without a fit of that op and span, and below the smallest
    /// measured size of a one-point fit (a single point gives a bandwidth, not a latency).
    ///
    /// Across nodes a group's bandwidth is that of its `per_node` ranks' NICs (see
    /// `cost::Machine::collective_s`), so inter-node fits serve only groups with as many ranks
    /// per node as the probes had (`meta.devices`, every probed GPU of each node): a DP group
    /// of one rank per node must not be priced with eight NICs. Imported fits whose layout
    /// is not recorded (`meta.devices` unset) are taken as they are.
    pub fn collective_s(
        &self,
        coll: Coll,
        ranks: u64,
        span: Span,
        per_node: u64,
        bytes: f64,
    ) -> Option<(f64, Source)> {
        if span == Span::Inter && self.meta.devices.is_some_and(|d| d != per_node) {
            return None;
        }
        let same: Vec<&CollectiveFit> = self
            .collectives
            .iter()
            .filter(|f| f.coll == coll && f.span == span && !f.segments.is_empty())
            .collect();
        let exact = same.iter().find(|f| f.ranks == ranks);
        let fit = exact.copied().or_else(|| {
            same.iter()
                .min_by_key(|f| ((f.ranks as i64 - ranks as i64).unsigned_abs(), f.ranks))
                .copied()
        })?;
        let (lo, hi) = fit.range();
        if fit.points.len() < 2 && bytes < lo {
            return None;
        }
        let scale = bus_factor(coll, ranks) / bus_factor(coll, fit.ranks);
        let t = fit.predict_scaled(bytes, scale);
        let src = if exact.is_none() || bytes < lo || bytes > hi {
            Source::Extrapolated
        } else if fit.points.iter().any(|p| p.bytes == bytes) {
            Source::Measured
        } else {
            Source::Interpolated
        };
        Some((t, src))
    }
}

#[cfg(test)]
mod tests {
    use super::super::profile::{CollectivePoint, Meta};
    use super::*;

    fn profile(points: &[(u64, u64, u64, f64)]) -> Profile {
        let mut p = Profile::new("t", Meta::default());
        p.gemm = points
            .iter()
            .map(|&(m, n, k, seconds)| GemmPoint {
                dtype: Dtype::Bf16,
                m,
                n,
                k,
                seconds,
            })
            .collect();
        p
    }

    /// A preset that runs every GEMM at 100 TFLOP/s except tiny ones (m < 64) at 10.
    fn preset(_b: u64, m: u64, _n: u64, _k: u64) -> f64 {
        if m < 64 { 10e12 } else { 100e12 }
    }

    #[test]
    fn measured_shape_gives_its_measurement() {
        // 2·4096³ FLOP in 1 ms = 137.4 TFLOP/s.
        let p = profile(&[(4096, 4096, 4096, 1e-3)]);
        let (f, src) = p
            .gemm_flops_s(Dtype::Bf16, 1, 4096, 4096, 4096, &preset)
            .unwrap();
        assert_eq!(src, Source::Measured);
        assert!((f - 2.0 * 4096f64.powi(3) / 1e-3).abs() < 1.0, "{f}");
        assert!(
            p.gemm_flops_s(Dtype::Fp16, 1, 4096, 4096, 4096, &preset)
                .is_none()
        );
    }

    #[test]
    fn far_tiny_gemm_scales_the_preset_and_says_extrapolated() {
        // Measured 2× the preset at 4096³; a 16×4096×4096 GEMM keeps the preset's tiny-GEMM
        // rate (10 TFLOP/s) times the measured ratio 2 = 20 TFLOP/s, not the measured 200.
        let t = 2.0 * 4096f64.powi(3) / 200e12;
        let p = profile(&[(4096, 4096, 4096, t)]);
        let (f, src) = p
            .gemm_flops_s(Dtype::Bf16, 1, 16, 4096, 4096, &preset)
            .unwrap();
        assert_eq!(src, Source::Extrapolated);
        assert!((f / 20e12 - 1.0).abs() < 1e-9, "{f}");
    }

    #[test]
    fn between_points_interpolates_the_ratio_in_log_space() {
        // Ratios 1 at m = 1024 and 2 at m = 4096 (both at 100 TFLOP/s preset); m = 2048 sits
        // halfway in ln m, so equal weights: exp((ln 1 + ln 2)/2) = √2 → 141.4 TFLOP/s.
        let f = |m: u64, tf: f64| 2.0 * (m * 1024 * 1024) as f64 / (tf * 1e12);
        let p = profile(&[
            (1024, 1024, 1024, f(1024, 100.0)),
            (4096, 1024, 1024, f(4096, 200.0)),
        ]);
        let (x, src) = p
            .gemm_flops_s(Dtype::Bf16, 1, 2048, 1024, 1024, &preset)
            .unwrap();
        assert_eq!(src, Source::Interpolated);
        assert!((x / (2f64.sqrt() * 100e12) - 1.0).abs() < 1e-9, "{x}");
    }

    #[test]
    fn collectives_answer_with_their_source() {
        // t = 10 µs + S / 100 GB/s at 1, 2, 4 MiB on 8 ranks.
        let pts = [1.0, 2.0, 4.0]
            .iter()
            .map(|m| CollectivePoint {
                bytes: m * 1048576.0,
                seconds: 10e-6 + m * 1048576.0 / 100e9,
                busbw_gbytes_s: None,
                residual: 0.0,
            })
            .collect();
        let mut p = Profile::new("t", Meta::default());
        p.collectives
            .push(CollectiveFit::fit(Coll::AllReduce, 8, Span::Intra, pts));
        let q = |r, b| {
            p.collective_s(Coll::AllReduce, r, Span::Intra, r, b)
                .unwrap()
        };
        assert_eq!(q(8, 2097152.0).1, Source::Measured);
        assert_eq!(q(8, 3e6).1, Source::Interpolated);
        assert!((q(8, 3e6).0 - (10e-6 + 3e6 / 100e9)).abs() < 1e-12);
        assert_eq!(q(8, 1e9).1, Source::Extrapolated);
        // 4 ranks from the 8-rank fit: bandwidth term × (2·3/4)/(2·7/8) = 6/7.
        let (t, src) = q(4, 4194304.0);
        assert_eq!(src, Source::Extrapolated);
        assert!(
            (t - (10e-6 + 4194304.0 / 100e9 * 6.0 / 7.0)).abs() < 1e-12,
            "{t}"
        );
        assert!(
            p.collective_s(Coll::AllGather, 8, Span::Intra, 8, 1e6)
                .is_none()
        );
        assert!(
            p.collective_s(Coll::AllReduce, 8, Span::Inter, 4, 1e6)
                .is_none()
        );
    }

    /// Inter-node fits measured with 8 GPUs of each node price only groups with 8 ranks per
    /// node: a DP group with one rank per node (tp = 8) has one NIC, not eight, and falls
    /// back to the preset.
    #[test]
    fn inter_node_fits_serve_only_their_ranks_per_node() {
        let pts = vec![CollectivePoint {
            bytes: 1e9,
            seconds: 1e9 / 180e9,
            busbw_gbytes_s: None,
            residual: 0.0,
        }];
        let meta = Meta {
            devices: Some(8),
            ..Meta::default()
        };
        let mut p = Profile::new("t", meta);
        p.collectives
            .push(CollectiveFit::fit(Coll::AllReduce, 16, Span::Inter, pts));
        let (t, _) = p
            .collective_s(Coll::AllReduce, 16, Span::Inter, 8, 1e9)
            .unwrap();
        assert!((t - 1e9 / 180e9).abs() < 1e-12, "{t}");
        assert!(
            p.collective_s(Coll::AllReduce, 16, Span::Inter, 1, 1e9)
                .is_none()
        );
    }
}
