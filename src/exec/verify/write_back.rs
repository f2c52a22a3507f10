//! `planner verify --write-back`: measured kernel times of a run written into a calibration
//! profile — GEMM points replaced by shape, collective points merged into their fit, which is
//! fitted again.

use super::median_of;
use crate::calib::{CollectiveFit, CollectivePoint, GemmPoint, Profile, Span};
use crate::exec::run::{KernelKey, RunResult};
use crate::units::Dtype;
use serde::Serialize;

/// What `write_back` changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct WriteBack {
    /// GEMM points added or replaced.
    pub gemm_points: usize,
    /// Collective points added or replaced.
    pub collective_points: usize,
    /// Collective fits refitted.
    pub fits: usize,
}

/// Writes the measured kernels of `run` into `p`: each GEMM shape's median time as a point of
/// `dtype` (replacing a point of the same shape), each collective size's median as a point of
/// its (collective, ranks, span) fit, which is then refitted.
pub fn write_back(p: &mut Profile, run: &RunResult, dtype: Dtype, what: &str) -> WriteBack {
    let mut wb = WriteBack::default();
    let mut colls: std::collections::BTreeMap<_, Vec<CollectivePoint>> = Default::default();
    for (key, samples) in run.samples() {
        let seconds = median_of(samples);
        match key {
            KernelKey::Gemm { m, n, k } => {
                p.gemm
                    .retain(|g| (g.dtype, g.m, g.n, g.k) != (dtype, m, n, k));
                p.gemm.push(GemmPoint {
                    dtype,
                    m,
                    n,
                    k,
                    seconds,
                });
                wb.gemm_points += 1;
            }
            KernelKey::Coll {
                coll,
                ranks,
                inter,
                bytes,
            } => {
                let span = if inter { Span::Inter } else { Span::Intra };
                colls
                    .entry((coll, ranks, span))
                    .or_default()
                    .push(CollectivePoint {
                        bytes: bytes as f64,
                        seconds,
                        busbw_gbytes_s: None,
                        residual: 0.0,
                    });
                wb.collective_points += 1;
            }
        }
    }
    for ((coll, ranks, span), new) in colls {
        refit(p, (coll, ranks, span), new);
        wb.fits += 1;
    }
    let note = format!(
        "{} GEMM and {} collective points written back by `planner verify` on {} ({what})",
        wb.gemm_points,
        wb.collective_points,
        crate::exec::today()
    );
    p.meta.notes = Some(match p.meta.notes.take() {
        Some(n) => format!("{n}; {note}"),
        None => note,
    });
    wb
}

/// Replaces the points of `key`'s fit measured at the sizes of `new` with `new`, and fits it
/// again (its source says `verify`).
fn refit(p: &mut Profile, key: (crate::graph::Coll, u64, Span), new: Vec<CollectivePoint>) {
    let (coll, ranks, span) = key;
    let old = p
        .collectives
        .iter()
        .position(|f| (f.coll, f.ranks, f.span) == key)
        .map(|i| p.collectives.remove(i));
    let mut points: Vec<CollectivePoint> =
        old.as_ref().map(|f| f.points.clone()).unwrap_or_default();
    points.retain(|q| new.iter().all(|x| x.bytes != q.bytes));
    points.extend(new);
    let mut f = CollectiveFit::fit(coll, ranks, span, points);
    f.source = Some(match old.and_then(|o| o.source) {
        Some(s) if s.contains("verify") => s,
        Some(s) => format!("{s} + verify"),
        None => "verify".into(),
    });
    p.collectives.push(f);
}
