//! The profile file (calibrate/<name>/profile.json): measured points, fits, residuals and
//! metadata, written atomically and read back by name or path.

use super::fit;
use crate::graph::Coll;
use crate::units::{Dtype, GB};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Errors reading, writing or making a profile.
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
    /// An input file (nccl-tests output, published sources) that cannot be used as it is.
    #[error("{path}: {message}; {fix}")]
    Input {
        /// File.
        path: String,
        /// What is wrong (with the line where there is one).
        message: String,
        /// How to fix it.
        fix: String,
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

impl Span {
    /// Name as written in profiles and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Span::Intra => "intra",
            Span::Inter => "inter",
        }
    }
}

/// Provenance of a profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Devices (GPUs, or threads standing for devices) the probes ran on.
    #[serde(default)]
    pub devices: Option<u64>,
    /// Whether the time budget ran out before every planned probe ran.
    #[serde(default)]
    pub truncated: bool,
    /// Free-form notes and sources.
    #[serde(default)]
    pub notes: Option<String>,
}

/// One measured GEMM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// One measured device-to-device copy (HBM bandwidth probe).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyPoint {
    /// Bytes copied (each is read once and written once).
    pub bytes: f64,
    /// Median time, seconds.
    pub seconds: f64,
}

impl CopyPoint {
    /// Achieved memory bandwidth, GB/s: read + write traffic, 2·bytes / t.
    pub fn gbytes_s(&self) -> f64 {
        2.0 * self.bytes / self.seconds / GB
    }
}

/// One measured collective.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectivePoint {
    /// Message size S in bytes (nccl-tests' "size").
    pub bytes: f64,
    /// Median time, seconds.
    pub seconds: f64,
    /// Bus bandwidth as the measuring tool reported it, GB/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busbw_gbytes_s: Option<f64>,
    /// Relative residual of the fit at this point, (fit − measured) / measured.
    #[serde(default)]
    pub residual: f64,
}

/// One α-β line over a range of message sizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Smallest measured size the line was fitted on, bytes.
    pub lo_bytes: f64,
    /// Largest measured size the line was fitted on, bytes.
    pub hi_bytes: f64,
    /// Latency term α, seconds.
    pub alpha_s: f64,
    /// Inverse bandwidth β, seconds per byte of message.
    pub beta_s_per_byte: f64,
    /// Points fitted.
    pub points: usize,
    /// Largest |relative residual| over those points.
    pub max_residual: f64,
}

impl Segment {
    /// α + β·S.
    pub fn predict(&self, bytes: f64) -> f64 {
        self.alpha_s + self.beta_s_per_byte * bytes
    }
}

/// Measured points and the piecewise α-β fit of one (collective, ranks, span).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectiveFit {
    /// Collective.
    pub coll: Coll,
    /// Ranks in the group.
    pub ranks: u64,
    /// Inside one node or across nodes.
    pub span: Span,
    /// α-β lines over consecutive message-size ranges, ascending.
    pub segments: Vec<Segment>,
    /// Largest |relative residual| over all points.
    pub max_residual: f64,
    /// Root-mean-square relative residual over all points.
    pub rms_residual: f64,
    /// Where the points came from (file, probe, publication).
    #[serde(default)]
    pub source: Option<String>,
    /// The measurements the fit was made from, one per size, with their residuals.
    pub points: Vec<CollectivePoint>,
}

impl CollectiveFit {
    /// Fits `points` (any order, repeated sizes merged to their median) piecewise.
    pub fn fit(coll: Coll, ranks: u64, span: Span, points: Vec<CollectivePoint>) -> CollectiveFit {
        let mut points = fit::merge_sizes(points);
        let segments = fit::piecewise(&points, fit::SEGMENT_TOLERANCE);
        let mut f = CollectiveFit {
            coll,
            ranks,
            span,
            segments,
            max_residual: 0.0,
            rms_residual: 0.0,
            source: None,
            points: Vec::new(),
        };
        let mut sq = 0.0;
        for p in &mut points {
            p.residual = fit::relative(f.predict(p.bytes), p.seconds);
            f.max_residual = f.max_residual.max(p.residual.abs());
            sq += p.residual * p.residual;
        }
        f.rms_residual = (sq / points.len().max(1) as f64).sqrt();
        f.points = points;
        f
    }

    /// Smallest and largest measured size.
    pub fn range(&self) -> (f64, f64) {
        match (self.segments.first(), self.segments.last()) {
            (Some(a), Some(b)) => (a.lo_bytes, b.hi_bytes),
            _ => (0.0, 0.0),
        }
    }

    /// Fitted time for `bytes`. Inside a segment: its line. Between two segments: linear
    /// between the end of one and the start of the next. Above the range: the last line (the
    /// bandwidth regime). Below it: the first line, but never slower than at the smallest
    /// measured size nor faster than that time scaled down by size.
    pub fn predict(&self, bytes: f64) -> f64 {
        self.predict_scaled(bytes, 1.0)
    }

    /// As `predict`, with the bandwidth term of each line scaled by `scale` (to carry a fit
    /// over to another rank count through the bus factor).
    pub fn predict_scaled(&self, bytes: f64, scale: f64) -> f64 {
        let line = |s: &Segment, b: f64| s.alpha_s + s.beta_s_per_byte * b * scale;
        let (Some(first), Some(last)) = (self.segments.first(), self.segments.last()) else {
            return f64::NAN;
        };
        if bytes < first.lo_bytes {
            let at_lo = line(first, first.lo_bytes);
            return line(first, bytes)
                .max(at_lo * bytes / first.lo_bytes)
                .min(at_lo);
        }
        for (i, s) in self.segments.iter().enumerate() {
            if bytes <= s.hi_bytes {
                if bytes >= s.lo_bytes || i == 0 {
                    return line(s, bytes);
                }
                let prev = &self.segments[i - 1];
                let (a, b) = (line(prev, prev.hi_bytes), line(s, s.lo_bytes));
                let w = (bytes - prev.hi_bytes) / (s.lo_bytes - prev.hi_bytes);
                return a + w * (b - a);
            }
        }
        line(last, bytes)
    }

    /// Bus bandwidth at `bytes`, GB/s (NCCL convention: f·S / t with `bus_factor`).
    pub fn busbw_gbytes_s(&self, bytes: f64) -> f64 {
        bus_factor(self.coll, self.ranks) * bytes / self.predict(bytes) / GB
    }

    /// Largest |relative residual| over the points of at least `bytes`.
    pub fn max_residual_from(&self, bytes: f64) -> f64 {
        self.points
            .iter()
            .filter(|p| p.bytes >= bytes)
            .map(|p| p.residual.abs())
            .fold(0.0, f64::max)
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
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Name (its folder under calibrate/).
    pub name: String,
    /// Provenance.
    pub meta: Meta,
    /// Measured GEMMs.
    #[serde(default)]
    pub gemm: Vec<GemmPoint>,
    /// Achieved HBM (device memory) bandwidth, GB/s: the best of the copy probes.
    #[serde(default)]
    pub hbm_gbytes_s: Option<f64>,
    /// The copy probes behind `hbm_gbytes_s`.
    #[serde(default)]
    pub copies: Vec<CopyPoint>,
    /// Collective fits.
    #[serde(default)]
    pub collectives: Vec<CollectiveFit>,
}

impl Profile {
    /// An empty profile.
    pub fn new(name: &str, meta: Meta) -> Profile {
        Profile {
            name: name.to_string(),
            meta,
            gemm: Vec::new(),
            hbm_gbytes_s: None,
            copies: Vec::new(),
            collectives: Vec::new(),
        }
    }

    /// Records copy probes and sets the HBM bandwidth to the best of them (large copies
    /// reach the streaming plateau; small ones are launch bound).
    pub fn set_copies(&mut self, copies: Vec<CopyPoint>) {
        self.hbm_gbytes_s = copies.iter().map(CopyPoint::gbytes_s).reduce(f64::max);
        self.copies = copies;
    }

    /// The fit of exactly (coll, ranks, span).
    pub fn fit_of(&self, coll: Coll, ranks: u64, span: Span) -> Option<&CollectiveFit> {
        self.collectives
            .iter()
            .find(|f| f.coll == coll && f.ranks == ranks && f.span == span)
    }

    /// Writes the profile as `dir/profile.json`, atomically (temporary file in the same
    /// folder, then rename), so a reader never sees half a profile.
    pub fn save(&self, dir: &Path) -> Result<PathBuf, CalibError> {
        if dir.is_file() {
            return Err(CalibError::Input {
                path: dir.display().to_string(),
                message: "is a file, and a profile is written into a folder (as profile.json)"
                    .into(),
                fix: "give --out a folder name (it is created)".into(),
            });
        }
        let path = dir.join("profile.json");
        self.save_file(&path)?;
        Ok(path)
    }

    /// Writes the profile to `path` atomically (temporary file in the same folder, then
    /// rename), creating the folder.
    pub fn save_file(&self, path: &Path) -> Result<(), CalibError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let io = |source| CalibError::Io {
            path: path.display().to_string(),
            source,
        };
        // What would be refused on reading is refused before writing (an import of a 1e30
        // GB/s point had written a profile every command then refused).
        self.check(&path.display().to_string())?;
        std::fs::create_dir_all(dir).map_err(io)?;
        let text = serde_json::to_string_pretty(self).expect("profiles serialise") + "\n";
        crate::units::write_atomic(path, text.as_bytes()).map_err(io)
    }
}

/// The file a profile argument names: a name under `calibrate/`, a folder, or a
/// `profile.json` path.
pub fn profile_path(arg: &str) -> Result<PathBuf, CalibError> {
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
    candidates
        .into_iter()
        .find(|c| c.is_file())
        .ok_or_else(|| CalibError::NotFound(arg.to_string()))
}

/// Loads a profile from a name under `calibrate/`, a folder, or a `profile.json` path.
pub fn load_profile(arg: &str) -> Result<Profile, CalibError> {
    let path = profile_path(arg)?;
    let text = std::fs::read_to_string(&path).map_err(|source| CalibError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let p: Profile = serde_json::from_str(&text).map_err(|e| CalibError::Format {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    p.check(&path.display().to_string())?;
    Ok(p)
}

mod check;
pub use check::{
    MAX_LINK_BYTES_S, MIN_LINK_BYTES_S, MIN_LINK_CHECK_BYTES, PEAK_ALLOWANCE, beyond_device,
    device_mismatch,
};

#[cfg(test)]
mod tests;
