//! Profiles from published measurements: a sources file (YAML) lists GEMM results, nccl-tests
//! outputs and bus-bandwidth sweeps, each with its source, and becomes a profile marked
//! `backend: published`.

use super::nccl_tests;
use super::profile::{CalibError, CollectiveFit, CollectivePoint, GemmPoint, Meta, Profile, Span};
use crate::graph::Coll;
use crate::units::{Dtype, GB, TFLOP};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A sources file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    /// Device the measurements are of.
    pub device: String,
    /// What the profile is and where its numbers come from.
    pub notes: String,
    /// Published GEMM results.
    #[serde(default)]
    pub gemm: Vec<GemmSource>,
    /// nccl-tests outputs (paths relative to the sources file).
    #[serde(default)]
    pub nccl_tests: Vec<NcclTestsSource>,
    /// Published bus-bandwidth measurements at stated message sizes.
    #[serde(default)]
    pub collectives: Vec<BusbwSource>,
}

/// One published GEMM throughput.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmSource {
    /// Data type.
    pub dtype: Dtype,
    /// Rows of C.
    pub m: u64,
    /// Columns of C.
    pub n: u64,
    /// Reduction dimension.
    pub k: u64,
    /// Achieved TFLOP/s.
    pub tflops: f64,
    /// Where it was published.
    pub source: String,
}

/// nccl-tests output files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NcclTestsSource {
    /// Files, relative to the sources file.
    pub files: Vec<String>,
    /// Inside a node or across nodes.
    pub span: Span,
    /// Where they were published.
    pub source: String,
}

/// nccl-tests bus bandwidth of one (collective, ranks, span) at stated sizes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusbwSource {
    /// Collective.
    pub coll: Coll,
    /// Ranks.
    pub ranks: u64,
    /// Inside a node or across nodes.
    pub span: Span,
    /// (message bytes, bus bandwidth GB/s) pairs.
    pub busbw: Vec<(f64, f64)>,
    /// Where it was published.
    pub source: String,
}

fn input(path: &Path, message: String, fix: &str) -> CalibError {
    CalibError::Input {
        path: path.display().to_string(),
        message,
        fix: fix.to_string(),
    }
}

fn read(path: &Path) -> Result<String, CalibError> {
    std::fs::read_to_string(path).map_err(|source| CalibError::Io {
        path: path.display().to_string(),
        source,
    })
}

type Group = (Vec<CollectivePoint>, Vec<String>);

fn add_busbw(
    groups: &mut BTreeMap<(Coll, u64, Span), Group>,
    c: &BusbwSource,
    path: &Path,
) -> Result<(), CalibError> {
    if c.ranks < 2 || c.busbw.is_empty() {
        return Err(input(
            path,
            format!(
                "collective {} on {} ranks: needs ranks ≥ 2 and at least one busbw pair",
                c.coll.name(),
                c.ranks
            ),
            "give `ranks: N` (N ≥ 2) and `busbw: [[bytes, GB/s], ...]`",
        ));
    }
    let g = groups.entry((c.coll, c.ranks, c.span)).or_default();
    for &(bytes, bw) in &c.busbw {
        if !(bytes > 0.0 && bw > 0.0) {
            return Err(input(
                path,
                format!("busbw pair [{bytes}, {bw}]"),
                "sizes and bandwidths must be positive",
            ));
        }
        // nccl-tests: busbw = algbw · f and algbw = S / t, so t = f·S / busbw.
        g.0.push(CollectivePoint {
            bytes,
            seconds: super::bus_factor(c.coll, c.ranks) * bytes / (bw * GB),
            busbw_gbytes_s: Some(bw),
            residual: 0.0,
        });
    }
    g.1.push(c.source.clone());
    Ok(())
}

/// Builds the profile `name` from the sources file at `path`. Points of one (collective,
/// ranks, span) from several sources are fitted together.
pub fn import(name: &str, path: &Path) -> Result<Profile, CalibError> {
    let text = read(path)?;
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    let src: Sources = serde_saphyr::from_str_with_options(&text, options).map_err(|e| {
        input(
            path,
            format!("not a sources file: {e}"),
            "see calibrate/README.md for its fields",
        )
    })?;
    if src.device.trim().is_empty() {
        return Err(input(
            path,
            "`device` is empty: a profile prices only clusters of the GPU it names".into(),
            "write the GPU the measurements are of, e.g. `device: NVIDIA H100-SXM5-80GB`",
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let meta = Meta {
        device: src.device.clone(),
        backend: "published".into(),
        tool_version: Some(env!("CARGO_PKG_VERSION").into()),
        notes: Some(src.notes.trim().to_string()),
        ..Default::default()
    };
    let mut p = Profile::new(name, meta);
    for g in &src.gemm {
        // Each dimension on its own: their product overflows u64 for large shapes.
        if !(g.tflops > 0.0 && g.tflops.is_finite()) || [g.m, g.n, g.k].contains(&0) {
            return Err(input(
                path,
                format!("gemm {}x{}x{}", g.m, g.n, g.k),
                "give positive m, n, k and tflops",
            ));
        }
        p.gemm.push(GemmPoint {
            dtype: g.dtype,
            m: g.m,
            n: g.n,
            k: g.k,
            seconds: 2.0 * g.m as f64 * g.n as f64 * g.k as f64 / (g.tflops * TFLOP),
        });
    }
    let mut groups: BTreeMap<(Coll, u64, Span), Group> = BTreeMap::new();
    for t in &src.nccl_tests {
        let files = t
            .files
            .iter()
            .map(|f| {
                let fp = dir.join(f);
                Ok((fp.display().to_string(), read(&fp)?))
            })
            .collect::<Result<Vec<_>, CalibError>>()?;
        let opt = nccl_tests::ImportOptions {
            span: Some(t.span),
            ..Default::default()
        };
        let imported = nccl_tests::import(name, &files, &opt)?;
        for f in imported.collectives {
            let g = groups.entry((f.coll, f.ranks, f.span)).or_default();
            g.0.extend(f.points);
            g.1.push(t.source.clone());
        }
    }
    for c in &src.collectives {
        add_busbw(&mut groups, c, path)?;
    }
    for ((coll, ranks, span), (points, sources)) in groups {
        let mut f = CollectiveFit::fit(coll, ranks, span, points);
        f.source = Some(sources.join("; "));
        p.collectives.push(f);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sources file of GEMM points only, written to a fresh temporary directory.
    fn sources(tag: &str, gemm: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("planner-published-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sources.yaml");
        std::fs::write(
            &path,
            format!("device: test\nnotes: test\ngemm:\n  - {gemm}\n"),
        )
        .unwrap();
        path
    }

    /// A zero dimension is an error naming the GEMM, whatever the others are (their product
    /// overflowed u64 before); a shape whose product exceeds u64 imports, its time computed in
    /// f64: 2·2³²·2³²·2 / (100·10¹² FLOP/s) = 2⁶⁶ / 10¹⁴ s.
    #[test]
    fn gemm_dimensions_are_checked_one_by_one() {
        let big = 1u64 << 32;
        let zero = sources(
            "zero",
            &format!("{{dtype: bf16, m: {big}, n: {big}, k: 0, tflops: 100, source: s}}"),
        );
        let e = import("t", &zero).unwrap_err().to_string();
        assert!(e.contains(&format!("gemm {big}x{big}x0")), "{e}");
        let huge = sources(
            "huge",
            &format!("{{dtype: bf16, m: {big}, n: {big}, k: 2, tflops: 100, source: s}}"),
        );
        let p = import("t", &huge).unwrap();
        assert_eq!(p.gemm[0].seconds, 2f64.powi(66) / 1e14);
        for path in [zero, huge] {
            std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
        }
    }
}
