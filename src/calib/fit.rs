//! Least-squares α-β fits of collective timings (nalgebra), piecewise over message-size ranges.
//!
//! One straight line t = α + β·S does not fit NCCL: its protocol (LL, LL128, Simple), channel
//! count and chunk size change with the message size, so the time is flat up to a few MiB and
//! then ramps with a changing slope (nccl-tests on 8×A100: 92.8 µs at 1 MiB, 134 µs at 8 MiB,
//! 1.162 ms at 128 MiB). We fit the Hockney model t = α + β·S (Hockney 1994, "The
//! communication challenge for MPP") *per message-size range*: points are split greedily into
//! the longest consecutive runs whose relative-error-weighted least-squares line stays within
//! `tol` of every point.

use super::profile::{CollectivePoint, Segment};
use crate::units::{MIB, US};
use nalgebra::{Matrix2, Vector2};

/// Largest relative residual a segment may leave at any of its points (5%: the run-to-run
/// spread of nccl-tests' out-of-place vs in-place columns in the A100 fixture is 1–4%).
pub const SEGMENT_TOLERANCE: f64 = 0.05;

/// α (s) and β (s/byte) minimising Σ ((α + β·Sᵢ − tᵢ) / tᵢ)², the relative error, so that the
/// small, latency-bound messages weigh as much as the large ones. Solved through the 2×2 normal
/// equations in µs and MiB (well conditioned); one point gives α = 0, β = t/S.
pub fn alpha_beta(points: &[CollectivePoint]) -> (f64, f64) {
    if points.len() == 1 {
        return (0.0, points[0].seconds / points[0].bytes.max(1.0));
    }
    let mut ata = Matrix2::<f64>::zeros();
    let mut atb = Vector2::<f64>::zeros();
    for p in points {
        let t = p.seconds / US;
        let row = Vector2::new(1.0 / t, p.bytes / MIB / t);
        ata += row * row.transpose();
        atb += row;
    }
    match ata.lu().solve(&atb) {
        Some(x) if x.iter().all(|v| v.is_finite()) => (x[0] * US, x[1] * US / MIB),
        // Every point at the same size: no slope can be told apart; keep the mean time.
        _ => {
            let mean = points.iter().map(|p| p.seconds).sum::<f64>() / points.len() as f64;
            (mean, 0.0)
        }
    }
}

/// Relative residual of a prediction: (fit − measured) / measured.
pub fn relative(fit_s: f64, measured_s: f64) -> f64 {
    (fit_s - measured_s) / measured_s
}

fn segment(points: &[CollectivePoint]) -> Segment {
    let (alpha_s, beta_s_per_byte) = alpha_beta(points);
    let max_residual = points
        .iter()
        .map(|p| relative(alpha_s + beta_s_per_byte * p.bytes, p.seconds).abs())
        .fold(0.0, f64::max);
    Segment {
        lo_bytes: points[0].bytes,
        hi_bytes: points[points.len() - 1].bytes,
        alpha_s,
        beta_s_per_byte,
        points: points.len(),
        max_residual,
    }
}

/// Splits points (sorted by size, one per size) into consecutive segments, each the longest
/// run from its first point whose fit leaves every residual within `tol`; a segment holds at
/// least two points where two remain (two points always fit exactly).
pub fn piecewise(points: &[CollectivePoint], tol: f64) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < points.len() {
        let mut j = (i + 2).min(points.len());
        let mut best = segment(&points[i..j]);
        while j < points.len() {
            let next = segment(&points[i..=j]);
            if next.max_residual > tol {
                break;
            }
            best = next;
            j += 1;
        }
        out.push(best);
        i = j;
    }
    out
}

/// The points merged per size (median of the times measured at one size), sorted by size.
pub fn merge_sizes(mut points: Vec<CollectivePoint>) -> Vec<CollectivePoint> {
    points.retain(|p| p.bytes > 0.0 && p.seconds > 0.0 && p.seconds.is_finite());
    points.sort_by(|a, b| {
        a.bytes
            .total_cmp(&b.bytes)
            .then(a.seconds.total_cmp(&b.seconds))
    });
    let mut out: Vec<CollectivePoint> = Vec::new();
    let mut run: Vec<CollectivePoint> = Vec::new();
    for p in points {
        if run.first().is_some_and(|r| r.bytes != p.bytes) {
            out.push(median_point(&run));
            run.clear();
        }
        run.push(p);
    }
    if !run.is_empty() {
        out.push(median_point(&run));
    }
    out
}

fn median_point(run: &[CollectivePoint]) -> CollectivePoint {
    run[run.len() / 2].clone()
}

/// Median of a non-empty list (the upper median for an even count).
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(bytes: f64, seconds: f64) -> CollectivePoint {
        CollectivePoint {
            bytes,
            seconds,
            busbw_gbytes_s: None,
            residual: 0.0,
        }
    }

    #[test]
    fn exact_line_is_recovered() {
        // t = 10 µs + S / (100 GB/s): 1 MiB → 20.48576 µs, 4 MiB → 51.94304 µs.
        let pts: Vec<_> = [1.0, 2.0, 4.0, 8.0]
            .iter()
            .map(|m| pt(m * MIB, 10e-6 + m * MIB / 100e9))
            .collect();
        let (a, b) = alpha_beta(&pts);
        assert!((a - 10e-6).abs() < 1e-12, "{a}");
        assert!((b - 1e-11).abs() < 1e-18, "{b}");
        assert_eq!(piecewise(&pts, 0.01).len(), 1);
    }

    #[test]
    fn a_knee_makes_two_segments() {
        // Flat 100 µs up to 4 MiB, then 100 µs + (S − 4 MiB)/(10 GB/s): one line misses the
        // knee by far more than 5%, two lines fit exactly.
        let pts: Vec<_> = (1..=16)
            .map(|m| {
                let s = m as f64 * MIB;
                pt(s, 100e-6 + (s - 4.0 * MIB).max(0.0) / 10e9)
            })
            .collect();
        let segs = piecewise(&pts, 0.05);
        assert!(segs.len() >= 2, "{segs:?}");
        assert!(segs.iter().all(|s| s.max_residual <= 0.05));
        assert_eq!(segs[0].lo_bytes, MIB);
        assert_eq!(segs.last().unwrap().hi_bytes, 16.0 * MIB);
    }

    #[test]
    fn one_point_is_pure_bandwidth() {
        let (a, b) = alpha_beta(&[pt(1e9, 0.01)]);
        assert_eq!(a, 0.0);
        assert!((b - 1e-11).abs() < 1e-24, "{b}");
    }

    #[test]
    fn repeated_sizes_merge_to_their_median() {
        let m = merge_sizes(vec![pt(8.0, 3.0), pt(4.0, 1.0), pt(8.0, 1.0), pt(8.0, 2.0)]);
        assert_eq!(m.len(), 2);
        assert_eq!((m[1].bytes, m[1].seconds), (8.0, 2.0));
    }
}
