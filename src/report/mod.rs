//! Capacity-planning reports (DESIGN.md §8): for a model on a cluster, the parallelisation
//! methods compared over GPU counts, time-to-train and GPU-hours with the knee, step-time and
//! memory breakdowns, the chosen plan's simulated timeline and, when given, predicted against
//! measured — as report.md, a self-contained report.html and PNG + SVG charts. Only this
//! module writes reports/.

pub mod charts;
mod details;
pub mod doc;
mod sections;
pub mod study;
mod summary;
pub mod verify;

pub use charts::Rendered;
pub use study::{Claim, Config, Study};
pub use verify::Verified;

use crate::calib::Profile;
use crate::spec::{ClusterSpec, ModelSpec};
use doc::Block;
use std::path::{Path, PathBuf};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A GPU count the cluster cannot be cut to.
    #[error(
        "--gpus: {n} is not a valid part of cluster `{cluster}` ({total} GPUs in nodes of \
         {per_node}); give counts up to {total} that are part of one node or whole nodes"
    )]
    Gpus {
        /// The count.
        n: u64,
        /// Cluster name.
        cluster: String,
        /// GPUs in the cluster.
        total: u64,
        /// GPUs per node.
        per_node: u64,
    },
    /// A verify file that does not have the shape `planner verify --format json` prints.
    #[error(
        "{file}: `{field}` {problem}; give the JSON that `planner verify --format json` prints"
    )]
    Verify {
        /// File.
        file: String,
        /// Field path, e.g. `measured.step_time_s`.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// No layout of the model is valid at all (its batch or sequence length is wrong).
    #[error("{0}")]
    NoPlan(String),
    /// A chart could not be drawn or encoded.
    #[error("chart: {0}")]
    Chart(String),
    /// A file could not be written.
    #[error("--out: {path}: cannot write it ({source}); give a writable directory")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// What a report is about.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The model.
    pub model: &'a ModelSpec,
    /// The whole cluster (each count is a cut of it).
    pub cluster: &'a ClusterSpec,
    /// The calibration profile, if any.
    pub profile: Option<&'a Profile>,
    /// The command that regenerates the report, shown at the top.
    pub command: &'a str,
}

/// A report ready to write.
#[derive(Clone, Debug)]
pub struct Report {
    /// Title.
    pub title: String,
    /// The content.
    pub blocks: Vec<Block>,
    /// Charts by file stem, in report order.
    pub charts: Vec<(&'static str, Rendered)>,
    /// The numbers behind it.
    pub study: Study,
}

impl Report {
    /// report.md.
    pub fn markdown(&self) -> String {
        doc::markdown(&self.blocks)
    }

    /// report.html, charts inlined.
    pub fn html(&self) -> String {
        let png = |name: &str| {
            self.charts
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, r)| r.png.clone())
        };
        doc::html(&self.title, &self.blocks, &png)
    }
}

/// Studies `inputs` under `cfg` and lays the report out, charts rendered.
pub fn build(
    inputs: &Inputs,
    cfg: &Config,
    verified: Option<&Verified>,
) -> Result<Report, ReportError> {
    let study = study::run(inputs.model, inputs.cluster, inputs.profile, cfg)?;
    let title = format!(
        "Capacity plan: {} on {}",
        inputs.model.name, inputs.cluster.name
    );
    let mut charts = Vec::new();
    let mut blocks = vec![Block::Heading(1, title.clone())];
    blocks.extend(summary::inputs(inputs, cfg, &study));
    blocks.extend(summary::summary(inputs, cfg, &study));
    blocks.extend(sections::scaling(inputs, &study, &mut charts)?);
    blocks.extend(sections::time_to_train(inputs, cfg, &study, &mut charts)?);
    blocks.extend(details::breakdown(&study, &mut charts)?);
    blocks.extend(details::memory(&study, &mut charts)?);
    blocks.extend(details::timeline(&study, &mut charts)?);
    if let Some(v) = verified {
        blocks.extend(details::verified(inputs, v, &mut charts)?);
    }
    blocks.extend(details::method_notes());
    Ok(Report {
        title,
        blocks,
        charts,
        study,
    })
}

/// [`crate::units::write_atomic`], its error naming the file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    crate::units::write_atomic(path, bytes).map_err(|source| ReportError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Writes the report into `dir` (created if needed): charts first, then report.md and
/// report.html. Returns the files written.
pub fn write(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut written = Vec::new();
    for (name, r) in &report.charts {
        for (ext, bytes) in [("png", &r.png[..]), ("svg", r.svg.as_bytes())] {
            let p = dir.join(format!("{name}.{ext}"));
            write_atomic(&p, bytes)?;
            written.push(p);
        }
    }
    for (file, text) in [
        ("report.md", report.markdown()),
        ("report.html", report.html()),
    ] {
        let p = dir.join(file);
        write_atomic(&p, text.as_bytes())?;
        written.push(p);
    }
    Ok(written)
}
