//! Calibration profiles: measured GEMM throughputs, HBM bandwidth and collective timings with
//! their piecewise α-β fits, and the lookups the cost model uses (measured, interpolated in
//! log-space, or extrapolated). Only this module reads calibrate/.

mod fit;
mod lookup;
pub mod nccl_tests;
mod profile;
pub mod published;

pub use fit::{SEGMENT_TOLERANCE, alpha_beta, median};
pub use lookup::PresetGemm;
pub use profile::{
    CalibError, CollectiveFit, CollectivePoint, CopyPoint, GemmPoint, Meta, PEAK_ALLOWANCE,
    Profile, Segment, Span, beyond_device, bus_factor, device_mismatch, load_profile, profile_path,
};

use serde::Serialize;

/// Where a number the cost model used came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A probe measured this very shape / size.
    Measured,
    /// Between measured points.
    Interpolated,
    /// Beyond the measured range.
    Extrapolated,
    /// From the hardware preset's efficiency curves (no measurement).
    Preset,
}

impl Source {
    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Source::Measured => "measured",
            Source::Interpolated => "interpolated",
            Source::Extrapolated => "extrapolated",
            Source::Preset => "preset",
        }
    }
}
