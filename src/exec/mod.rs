//! Execution on real devices (DESIGN.md §6–7): the calibration probes and their backends.
//! The only module that touches GPUs, runs threads standing for devices, or talks to other
//! processes (`rendezvous`). `cpu` runs the same probes on the cores so tests need no GPU;
//! `cuda` drives cuBLAS and NCCL through cudarc, loaded at run time.

pub mod clock;
pub mod cpu;
pub mod cpu_comm;
pub mod cpu_run;
pub mod cuda;
mod cuda_nccl;
pub mod cuda_run;
pub mod lower;
pub mod probe;
pub mod rendezvous;
pub mod run;
pub mod spawn;
pub mod verify;

pub use probe::{Backend, ProbeConfig, Progress, gemm_shapes, run_probes};

use crate::calib::CalibError;

/// Errors running probes.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The backend cannot run here (no GPU, no driver, a library missing).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// A device call failed.
    #[error("{backend}: {call} failed: {message}")]
    Device {
        /// Backend.
        backend: &'static str,
        /// What was called.
        call: String,
        /// The library's error.
        message: String,
    },
    /// The multi-node rendezvous failed.
    #[error("rendezvous: {0}")]
    Rendezvous(String),
    /// Bad probe configuration.
    #[error("{0}")]
    Config(String),
    /// Writing the profile failed.
    #[error("{0}")]
    Calib(#[from] CalibError),
}

/// How each probe is timed: warm-up calls, then `repeats` timed runs of `iters` back-to-back
/// calls each; the answer is the median per-call time (robust to a stray slow run).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// Untimed runs first (clocks, caches, lazy initialisation, cuBLAS heuristics).
    pub warmup: u32,
    /// Timed runs; the median is kept.
    pub repeats: u32,
    /// Each timed run lasts at least this long (calls are batched to reach it), seconds.
    pub min_run_s: f64,
    /// At most this many calls per timed run.
    pub max_iters: u32,
}

impl Timing {
    /// Median seconds per call of `run`, which performs `iters` calls back to back and
    /// returns their total seconds. The first (warm-up) run sizes the batch.
    pub fn measure(
        &self,
        mut run: impl FnMut(u32) -> Result<f64, ExecError>,
    ) -> Result<f64, ExecError> {
        let first = run(1)?;
        for _ in 1..self.warmup {
            run(1)?;
        }
        let iters = ((self.min_run_s / first.max(1e-9)).ceil() as u32).clamp(1, self.max_iters);
        let mut per_call = Vec::with_capacity(self.repeats as usize);
        for _ in 0..self.repeats.max(1) {
            per_call.push(run(iters)? / iters as f64);
        }
        Ok(crate::calib::median(&mut per_call))
    }

    /// Calls per run for a collective of `bytes`, the same on every node (multi-node probes
    /// must issue identical call sequences): enough to move about 64 MiB, 2 to 32 calls.
    pub fn collective_iters(bytes: f64) -> u32 {
        ((64.0 * crate::units::MIB / bytes).ceil() as u32).clamp(2, 32)
    }
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock (days-from-civil inverse,
/// H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_date(secs / 86_400)
}

fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_from_days_since_1970() {
        assert_eq!(super::civil_date(0), "1970-01-01");
        // 2024-02-29 is day 19782 (54 years, 13 of them leap: 54·365 + 13 + 31 + 28).
        assert_eq!(super::civil_date(19_782), "2024-02-29");
    }

    use super::*;

    #[test]
    fn measure_keeps_the_median_per_call() {
        // Runs take 1 ms per call, except one timed run disturbed to 9 ms per call.
        let t = Timing {
            warmup: 2,
            repeats: 3,
            min_run_s: 0.01,
            max_iters: 100,
        };
        let mut calls = Vec::new();
        let got = t
            .measure(|iters| {
                calls.push(iters);
                let per = if calls.len() == 4 { 9e-3 } else { 1e-3 };
                Ok(per * iters as f64)
            })
            .unwrap();
        // Warm-up 1 + 1 calls, then 3 runs of 0.01 / 0.001 = 10 calls.
        assert_eq!(calls, vec![1, 1, 10, 10, 10]);
        assert!((got - 1e-3).abs() < 1e-15, "{got}");
    }

    #[test]
    fn collective_iterations_depend_on_size_only() {
        assert_eq!(Timing::collective_iters(4096.0), 32);
        assert_eq!(Timing::collective_iters(16.0 * 1048576.0), 4);
        assert_eq!(Timing::collective_iters(1073741824.0), 2);
    }
}
