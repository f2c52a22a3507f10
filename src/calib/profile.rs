//! The profile file (calibrate/<name>/profile.json) and its lookups.

use super::Source;
use crate::graph::Coll;
use crate::units::{Dtype, GB};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Errors reading or writing a profile.
#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    /// The profile could not be found.
    #[error(
        "calibration `{0}` not found: give a name under calibrate/ or a path to a profile.json or its folder"
    )]
    NotFound(String),
    /// IO error.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Malformed profile.
    #[error("{path}: not a calibration profile: {message}")]
    Format {
        /// File.
        path: String,
        /// Parser message.
        message: String,
    },
}

/// Whether a collective's ranks share one node or span several.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Span {
    /// All ranks in one node.
    Intra,
    /// Ranks in several nodes.
    Inter,
}

/// Provenance of a profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// GPU (or CPU) name.
    pub device: String,
    /// How it was made: `cuda`, `cpu`, `nccl-tests`, `published`.
    pub backend: String,
    /// Driver version, when known.
    #[serde(default)]
    pub driver: Option<String>,
    /// CUDA version.
    #[serde(default)]
    pub cuda: Option<String>,
    /// cuBLAS version.
    #[serde(default)]
    pub cublas: Option<String>,
    /// NCCL version.
    #[serde(default)]
    pub nccl: Option<String>,
    /// Date of measurement (ISO 8601).
    #[serde(default)]
    pub date: Option<String>,
    /// planner version that wrote it.
    #[serde(default)]
    pub tool_version: Option<String>,
    /// Free-form notes and sources.
    #[serde(default)]
    pub notes: Option<String>,
}

/// One measured GEMM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GemmPoint {
    /// Data type.
    pub dtype: Dtype,
    /// Rows of C.
    pub m: u64,
    /// Columns of C.
    pub n: u64,
    /// Reduction dimension.
    pub k: u64,
    /// Median time of one GEMM, seconds.
    pub seconds: f64,
}

impl GemmPoint {
    /// Achieved FLOP/s.
    pub fn flops_s(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64 / self.seconds
    }
}

/// One measured collective.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectivePoint {
    /// Message size S in bytes (nccl-tests' "size").
    pub bytes: f64,
    /// Median time, seconds.
    pub seconds: f64,
}

/// Measured points and the α-β fit of one (collective, ranks, span).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectiveFit {
    /// Collective.
    pub coll: Coll,
    /// Ranks in the group.
    pub ranks: u64,
    /// Inside one node or across nodes.
    pub span: Span,
    /// Latency term α, seconds.
    pub alpha_s: f64,
    /// Inverse bandwidth β, seconds per byte of message.
    pub beta_s_per_byte: f64,
    /// The measurements the fit was made from.
    pub points: Vec<CollectivePoint>,
}

impl CollectiveFit {
    /// Fitted time for `bytes`: α + β·S.
    pub fn predict(&self, bytes: f64) -> f64 {
        self.alpha_s + self.beta_s_per_byte * bytes
    }

    /// Bus bandwidth implied by β, GB/s (NCCL convention: algbw × 2(n−1)/n for all-reduce,
    /// × (n−1)/n for all-gather / reduce-scatter / all-to-all).
    pub fn busbw_gbytes_s(&self) -> f64 {
        bus_factor(self.coll, self.ranks) / self.beta_s_per_byte / GB
    }
}

/// NCCL's bus-bandwidth factor (nccl-tests doc/PERFORMANCE.md): the fraction of the message
/// each rank must send, 2(n−1)/n for all-reduce, (n−1)/n for all-gather, reduce-scatter and
/// all-to-all, 1 for send/receive.
pub fn bus_factor(coll: Coll, n: u64) -> f64 {
    let n = n.max(1) as f64;
    match coll {
        Coll::AllReduce => 2.0 * (n - 1.0) / n,
        Coll::AllGather | Coll::ReduceScatter | Coll::AllToAll => (n - 1.0) / n,
        Coll::SendRecv => 1.0,
    }
}

/// A calibration profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Name (its folder under calibrate/).
    pub name: String,
    /// Provenance.
    pub meta: Meta,
    /// Measured GEMMs.
    #[serde(default)]
    pub gemm: Vec<GemmPoint>,
    /// Measured HBM (device memory) bandwidth, GB/s.
    #[serde(default)]
    pub hbm_gbytes_s: Option<f64>,
    /// Collective fits.
    #[serde(default)]
    pub collectives: Vec<CollectiveFit>,
}

impl Profile {
    /// Achieved FLOP/s for a GEMM of this shape, interpolated in log-space over (m, n, k) from
    /// the measured points of the same data type (inverse-distance weighting of the
    /// efficiency over the nearest points). `None` when no point of that type exists.
    pub fn gemm_flops_s(&self, dtype: Dtype, m: u64, n: u64, k: u64) -> Option<(f64, Source)> {
        let pts: Vec<&GemmPoint> = self.gemm.iter().filter(|p| p.dtype == dtype).collect();
        if pts.is_empty() {
            return None;
        }
        let l = |x: u64| (x.max(1) as f64).ln();
        let q = [l(m), l(n), l(k)];
        let mut near: Vec<(f64, f64)> = pts
            .iter()
            .map(|p| {
                let d = [l(p.m) - q[0], l(p.n) - q[1], l(p.k) - q[2]];
                (
                    (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt(),
                    p.flops_s(),
                )
            })
            .collect();
        near.sort_by(|a, b| a.0.total_cmp(&b.0));
        if near[0].0 < 1e-9 {
            return Some((near[0].1, Source::Measured));
        }
        let inside = [(m, 0), (n, 1), (k, 2)].iter().all(|&(x, i)| {
            let dim = |p: &GemmPoint| [p.m, p.n, p.k][i];
            pts.iter().any(|p| dim(p) <= x) && pts.iter().any(|p| dim(p) >= x)
        });
        let (mut wsum, mut vsum) = (0.0, 0.0);
        for &(d, v) in near.iter().take(8) {
            let w = 1.0 / (d * d);
            wsum += w;
            vsum += w * v;
        }
        Some((
            vsum / wsum,
            if inside {
                Source::Interpolated
            } else {
                Source::Extrapolated
            },
        ))
    }

    /// Time of a collective from the fit of the same (op, ranks, span), or of the nearest rank
    /// count of the same op and span scaled by the bus factor. `None` without any fit.
    pub fn collective_s(
        &self,
        coll: Coll,
        ranks: u64,
        span: Span,
        bytes: f64,
    ) -> Option<(f64, Source)> {
        let same: Vec<&CollectiveFit> = self
            .collectives
            .iter()
            .filter(|f| f.coll == coll && f.span == span)
            .collect();
        let exact = same.iter().find(|f| f.ranks == ranks);
        let fit = exact.copied().or_else(|| {
            same.iter()
                .min_by_key(|f| (f.ranks as i64 - ranks as i64).unsigned_abs())
                .copied()
        })?;
        let (lo, hi) = fit.points.iter().fold((f64::MAX, 0.0f64), |(lo, hi), p| {
            (lo.min(p.bytes), hi.max(p.bytes))
        });
        let scale = bus_factor(coll, ranks) / bus_factor(coll, fit.ranks);
        let t = fit.alpha_s + fit.beta_s_per_byte * bytes * scale;
        let src = if exact.is_none() || bytes < lo || bytes > hi {
            Source::Extrapolated
        } else if fit.points.iter().any(|p| p.bytes == bytes) {
            Source::Measured
        } else {
            Source::Interpolated
        };
        Some((t, src))
    }

    /// Writes the profile as `dir/profile.json`, atomically (temporary file, then rename).
    pub fn save(&self, dir: &Path) -> Result<PathBuf, CalibError> {
        let io = |source| CalibError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join("profile.json");
        let tmp = dir.join(".profile.json.tmp");
        let text = serde_json::to_string_pretty(self).expect("profiles serialise");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(path)
    }
}

/// Loads a profile from a name under `calibrate/`, a folder, or a `profile.json` path.
pub fn load_profile(arg: &str) -> Result<Profile, CalibError> {
    let p = Path::new(arg);
    let candidates = [
        p.join("profile.json"),
        p.to_path_buf(),
        Path::new("calibrate").join(arg).join("profile.json"),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("calibrate")
            .join(arg)
            .join("profile.json"),
    ];
    let path = candidates
        .iter()
        .find(|c| c.is_file())
        .ok_or_else(|| CalibError::NotFound(arg.to_string()))?;
    let text = std::fs::read_to_string(path).map_err(|source| CalibError::Io {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| CalibError::Format {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}
