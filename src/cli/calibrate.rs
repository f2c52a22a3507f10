//! `planner calibrate`: run the probes on a backend, import nccl-tests output or published
//! measurements, and show a profile's points, fits and residuals.

use super::{CliError, render};
use crate::calib::{self, CollectiveFit, Profile, Span, nccl_tests, published};
use crate::exec::{self, Backend, ProbeConfig, Timing, cpu::Cpu, cuda::Cuda, probe::fmt_bytes};
use crate::graph::Coll;
use crate::spec;
use crate::units::{GB, MIB, TFLOP, fmt_secs};
use clap::{Args, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

/// `planner calibrate ...`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct CalibrateArgs {
    /// Import or show instead of probing.
    #[command(subcommand)]
    pub command: Option<CalibrateCmd>,
    /// Probe options.
    #[command(flatten)]
    pub probe: ProbeArgs,
}

/// Backends of the probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// NVIDIA GPUs: cuBLAS and NCCL, loaded at run time.
    Cuda,
    /// The host's cores, threads standing for devices (no GPU needed).
    Cpu,
}

/// `--span` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SpanArg {
    /// All ranks in one node.
    Intra,
    /// Ranks in several nodes.
    Inter,
}

/// `--coll` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CollArg {
    /// all_reduce_perf.
    AllReduce,
    /// all_gather_perf.
    AllGather,
    /// reduce_scatter_perf.
    ReduceScatter,
    /// alltoall_perf.
    AllToAll,
    /// sendrecv_perf.
    SendRecv,
}

/// Probe options: `planner calibrate --cluster C --backend B --out calibrate/NAME`.
#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// Cluster the profile is for (its node size bounds the tp shards probed).
    #[arg(long, required = true)]
    pub cluster: Option<String>,
    /// Where to run the probes.
    #[arg(long, value_enum, required = true)]
    pub backend: Option<BackendArg>,
    /// Models whose GEMM shapes to probe (repeat the flag for several).
    #[arg(long)]
    pub model: Vec<String>,
    /// Time budget for all probes, seconds.
    #[arg(
        long = "budget-s",
        default_value_t = 240.0,
        allow_negative_numbers = true
    )]
    pub budget_s: f64,
    /// Output folder, e.g. calibrate/h100-node7 (the profile's name is its last part).
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// Devices to probe (default: every local GPU; cpu: the cluster's GPUs per node, ≤ 8).
    #[arg(long, allow_negative_numbers = true, value_parser = super::args::size::<u64>)]
    pub devices: Option<u64>,
    /// Largest collective message, bytes (default: 1 GiB on cuda, 64 MiB on cpu).
    #[arg(long = "max-bytes", allow_negative_numbers = true)]
    pub max_bytes: Option<f64>,
    /// Largest micro-batch whose GEMM shapes are probed (default: 8 on cuda, 2 on cpu).
    #[arg(long = "max-mbs", allow_negative_numbers = true, value_parser = super::args::size::<u64>)]
    pub max_mbs: Option<u64>,
}

/// `planner calibrate <subcommand>`.
#[derive(Subcommand, Debug)]
pub enum CalibrateCmd {
    /// Turn nccl-tests output (table or CSV) into a profile.
    ImportNcclTests {
        /// nccl-tests outputs, one run per file.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Ranks of every file (default: from `# Rank` lines or a name like `8gpu`).
        #[arg(long, allow_negative_numbers = true, value_parser = super::args::size::<u64>)]
        ranks: Option<u64>,
        /// Inside one node or across nodes (default: inter when several hosts are named).
        #[arg(long, value_enum)]
        span: Option<SpanArg>,
        /// Collective of every file (default: from the output or the file name).
        #[arg(long, value_enum)]
        coll: Option<CollArg>,
        /// The GPU that ran them, e.g. "NVIDIA A100-SXM4-80GB" (default: from the `# Rank`
        /// lines, which CSV exports lack; a profile must name its GPU to be used).
        #[arg(long)]
        device: Option<String>,
        /// Output folder, e.g. calibrate/a100-nccl.
        #[arg(long)]
        out: PathBuf,
    },
    /// Build a profile from a sources file of published measurements (calibrate/README.md).
    ImportPublished {
        /// The sources file (YAML).
        sources: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a profile's metadata, points, fits and residuals.
    Show {
        /// A name under calibrate/ or a path to a profile (or its folder).
        profile: String,
        /// List every collective point (default: only for fits of at most 40 points).
        #[arg(long)]
        points: bool,
        /// Print the profile as JSON instead.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `planner calibrate`.
pub fn run(a: CalibrateArgs) -> Result<String, CliError> {
    match a.command {
        Some(CalibrateCmd::ImportNcclTests {
            files,
            ranks,
            span,
            coll,
            device,
            out,
        }) => {
            let texts = files
                .iter()
                .map(|f| {
                    Ok((
                        f.display().to_string(),
                        std::fs::read_to_string(f)
                            .map_err(|e| CliError::BadInput(format!("{}: {e}", f.display())))?,
                    ))
                })
                .collect::<Result<Vec<_>, CliError>>()?;
            if device.as_deref().is_some_and(|d| d.trim().is_empty()) {
                return Err(CliError::BadInput(
                    "--device '': name the GPU the outputs ran on, e.g. --device \"NVIDIA A100-SXM4-80GB\"".into(),
                ));
            }
            let opt = nccl_tests::ImportOptions {
                ranks,
                span: span.map(span_of),
                coll: coll.map(coll_of),
                device,
            };
            let p = nccl_tests::import(&name_of(&out)?, &texts, &opt)?;
            saved(&p, &out)
        }
        Some(CalibrateCmd::ImportPublished { sources, out }) => {
            let p = published::import(&name_of(&out)?, &sources)?;
            saved(&p, &out)
        }
        Some(CalibrateCmd::Show {
            profile,
            points,
            json,
        }) => {
            let p = calib::load_profile(&profile)?;
            Ok(if json {
                super::json(&p)
            } else {
                show(&p, points)
            })
        }
        None => probe(a.probe),
    }
}

fn span_of(s: SpanArg) -> Span {
    match s {
        SpanArg::Intra => Span::Intra,
        SpanArg::Inter => Span::Inter,
    }
}

fn coll_of(c: CollArg) -> Coll {
    match c {
        CollArg::AllReduce => Coll::AllReduce,
        CollArg::AllGather => Coll::AllGather,
        CollArg::ReduceScatter => Coll::ReduceScatter,
        CollArg::AllToAll => Coll::AllToAll,
        CollArg::SendRecv => Coll::SendRecv,
    }
}

/// The profile name an output folder gives: its last component.
fn name_of(out: &Path) -> Result<String, CliError> {
    out.file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(str::to_string)
        .ok_or_else(|| {
            CliError::BadInput(format!(
                "--out {}: give a folder such as calibrate/h100-node7 (its name names the profile)",
                out.display()
            ))
        })
}

fn saved(p: &Profile, out: &Path) -> Result<String, CliError> {
    let path = p.save(out)?;
    let worst = p
        .collectives
        .iter()
        .map(|f| f.max_residual)
        .fold(0.0, f64::max);
    // A profile that names no GPU prices no cluster until it is imported again with one.
    let usable = if p.meta.device == crate::calib::nccl_tests::UNKNOWN_DEVICE {
        "; it names no GPU (the outputs have no `# Rank` lines), so no estimate takes it: import again with --device \"<GPU name>\"".to_string()
    } else {
        format!("; use it with `--calibration {}`", out.display())
    };
    Ok(format!(
        "wrote {}: {} GEMM points, HBM {}, {} collective fits (worst residual {:.1}%){}\n\
         see it with `planner calibrate show {}`{usable}\n",
        path.display(),
        p.gemm.len(),
        p.hbm_gbytes_s
            .map_or("-".into(), |g| format!("{g:.0} GB/s")),
        p.collectives.len(),
        100.0 * worst,
        if p.meta.truncated {
            "; the budget ran out before every probe ran (meta.truncated)"
        } else {
            ""
        },
        out.display(),
    ))
}

/// Passes over the GEMM shapes on the cpu: the cores are shared with other work, whose
/// bursts slow a GEMM by up to 40% for seconds at a time; the median of three passes spread
/// over the phase keeps a burst in one pass from setting a shape's time.
const CPU_GEMM_ROUNDS: u32 = 3;

fn probe(a: ProbeArgs) -> Result<String, CliError> {
    let missing = |f: &str| CliError::BadInput(format!("calibrate: give {f}"));
    let cluster = spec::load_cluster(&a.cluster.ok_or_else(|| missing("--cluster C"))?)?;
    let backend = a.backend.ok_or_else(|| missing("--backend cuda|cpu"))?;
    let out = a.out.ok_or_else(|| missing("--out calibrate/NAME"))?;
    // Up to a week: beyond ~1.8e19 s the probe clock's Duration overflowed (a panic).
    const MAX_BUDGET_S: f64 = 7.0 * 86400.0;
    if !(a.budget_s.is_finite() && a.budget_s > 0.0 && a.budget_s <= MAX_BUDGET_S) {
        return Err(CliError::BadInput(format!(
            "--budget-s {}: give a positive number of seconds, at most {MAX_BUDGET_S} (a week)",
            a.budget_s
        )));
    }
    let cuda = backend == BackendArg::Cuda;
    let limit = if cuda {
        16.0 * 1024.0 * MIB
    } else {
        1024.0 * MIB
    };
    if let Some(b) = a.max_bytes
        && !(4096.0..=limit).contains(&b)
    {
        return Err(CliError::BadInput(format!(
            "--max-bytes {b}: give 4096 to {limit} bytes for the {} backend",
            if cuda { "cuda" } else { "cpu" }
        )));
    }
    // One process drives every local GPU (8 on a DGX, 16 on the largest nodes); the cpu
    // backend runs one thread per device, each with its own buffers.
    const MAX_DEVICES: u64 = 64;
    if let Some(d) = a.devices
        && !(1..=MAX_DEVICES).contains(&d)
    {
        return Err(CliError::BadInput(format!(
            "--devices {d}: give 1 to {MAX_DEVICES} devices (default: every local GPU; cpu: the \
             cluster's GPUs per node, at most 8)"
        )));
    }
    if a.max_mbs == Some(0) {
        return Err(CliError::BadInput(
            "--max-mbs 0: give at least 1 (the largest micro-batch whose GEMM shapes are probed)"
                .into(),
        ));
    }
    let models = a
        .model
        .iter()
        .map(|m| spec::load_model(m))
        .collect::<Result<Vec<_>, _>>()?;
    let max_bytes = a
        .max_bytes
        .unwrap_or(if cuda { 1024.0 * MIB } else { 64.0 * MIB });
    let cfg = ProbeConfig {
        name: name_of(&out)?,
        models,
        cluster: cluster.clone(),
        budget_s: a.budget_s,
        min_message_bytes: 4096.0,
        grid: if cuda {
            vec![512, 2048, 8192]
        } else {
            vec![64, 256]
        },
        max_mbs: a.max_mbs.unwrap_or(if cuda { 8 } else { 2 }),
        gemm_rounds: if cuda { 1 } else { CPU_GEMM_ROUNDS },
        timing: if cuda {
            Timing {
                warmup: 3,
                repeats: 5,
                min_run_s: 0.02,
                max_iters: 100,
            }
        } else {
            exec::cpu::TIMING
        },
    };
    let env = if cuda {
        exec::rendezvous::Env::from_vars(|k| std::env::var(k).ok())?
    } else {
        None
    };
    // The process that writes the profile checks its folder first: the probes take the
    // whole budget (minutes), and an unwritable --out had failed only after them.
    if env.as_ref().is_none_or(|e| e.rank == 0) {
        writable_folder(&out)?;
    }
    let mut b: Box<dyn Backend> = if cuda {
        Box::new(Cuda::open(a.devices, max_bytes, env)?)
    } else {
        Box::new(Cpu::new(
            a.devices.unwrap_or(cluster.gpus_per_node.min(8)),
            max_bytes,
        ))
    };
    let bar = super::render::progress_bar();
    let mut tick = |p: exec::Progress| super::render::show(&bar, p);
    let profile = exec::run_probes(b.as_mut(), &cfg, &mut tick)?;
    bar.finish_and_clear();
    match profile {
        // A profile with no measurement prices nothing; it had been written with exit 0 and
        // failed only where used (`verify`).
        Some(p) if p.gemm.is_empty() && p.collectives.is_empty() && p.hbm_gbytes_s.is_none() => {
            Err(CliError::BadInput(format!(
                "--budget-s {}: the budget ran out before any probe finished, so there is no \
                 profile to write; give a larger --budget-s (the default is 240)",
                a.budget_s
            )))
        }
        Some(p) => saved(&p, &out),
        None => Ok("took part in the inter-node probes; rank 0 writes the profile\n".into()),
    }
}

/// Creates `out` and writes and removes a scratch file in it, so that a folder the profile
/// cannot be written to is refused before the probes run.
fn writable_folder(out: &Path) -> Result<(), CliError> {
    let refuse = |e: std::io::Error| {
        CliError::BadInput(format!(
            "--out {}: cannot write the profile there ({e}); give a folder you can write, \
             such as calibrate/NAME",
            out.display()
        ))
    };
    std::fs::create_dir_all(out).map_err(refuse)?;
    let scratch = out.join(format!(".write-check-{}", std::process::id()));
    std::fs::write(&scratch, b"").map_err(refuse)?;
    std::fs::remove_file(&scratch).map_err(refuse)
}

/// The text of `planner calibrate show`.
pub fn show(p: &Profile, all_points: bool) -> String {
    let m = &p.meta;
    let opt = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".into());
    let mut s = format!("profile {} ({} backend)\n\n", p.name, m.backend);
    s += &render::table(
        &["metadata", "value"],
        vec![
            vec!["device".into(), m.device.clone()],
            vec![
                "devices probed".into(),
                m.devices.map_or("-".into(), |d| d.to_string()),
            ],
            vec!["driver".into(), opt(&m.driver)],
            vec!["CUDA".into(), opt(&m.cuda)],
            vec!["cuBLAS".into(), opt(&m.cublas)],
            vec!["NCCL".into(), opt(&m.nccl)],
            vec!["date".into(), opt(&m.date)],
            vec!["tool version".into(), opt(&m.tool_version)],
            vec![
                "budget ran out".into(),
                if m.truncated { "yes" } else { "no" }.into(),
            ],
        ],
    );
    if let Some(n) = &m.notes {
        s += &format!("\n\nnotes: {n}");
    }
    s += "\n\n";
    s += &gemm_section(p);
    s += &format!(
        "HBM bandwidth: {}\n\n",
        p.hbm_gbytes_s.map_or("not measured".into(), |g| format!(
            "{g:.1} GB/s (best of {} device copies: {})",
            p.copies.len(),
            p.copies
                .iter()
                .map(|c| format!("{} {:.1}", fmt_bytes(c.bytes), c.gbytes_s()))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    );
    s += &collective_section(p, all_points);
    s
}

fn gemm_section(p: &Profile) -> String {
    if p.gemm.is_empty() {
        return "GEMM: no points\n\n".into();
    }
    // Leave-one-out with a flat preset: how well the log-space surface predicts each point
    // from the others.
    let flat = |_: u64, _: u64, _: u64, _: u64| TFLOP;
    let rows = p
        .gemm_loo_residuals(&flat)
        .into_iter()
        .map(|(g, r)| {
            vec![
                g.dtype.to_string(),
                format!("{}x{}x{}", g.m, g.n, g.k),
                fmt_secs(g.seconds),
                format!("{:.4}", g.flops_s() / TFLOP)
                    .chars()
                    .take(6)
                    .collect::<String>(),
                r.map_or("-".into(), |r| crate::units::signed_pct(r, 1)),
            ]
        })
        .collect();
    format!(
        "GEMM points ({}; residual = leave-one-out error of the log-space interpolation)\n\n{}\n\n",
        p.gemm.len(),
        render::table(&["dtype", "m x n x k", "time", "TFLOP/s", "residual"], rows)
    )
}

fn collective_section(p: &Profile, all_points: bool) -> String {
    let rows = p
        .collectives
        .iter()
        .map(|f| {
            let (lo, hi) = f.range();
            vec![
                f.coll.name().into(),
                f.ranks.to_string(),
                f.span.name().into(),
                f.points.len().to_string(),
                format!("{} – {}", fmt_bytes(lo), fmt_bytes(hi)),
                f.segments.len().to_string(),
                format!("{:.1}%", 100.0 * f.max_residual),
                format!("{:.1}%", 100.0 * f.max_residual_from(MIB)),
                format!("{:.1}%", 100.0 * f.rms_residual),
                format!("{:.1}", f.busbw_gbytes_s(hi)),
            ]
        })
        .collect();
    let mut s = format!(
        "collective fits (piecewise α-β; residual = (fit − measured) / measured)\n\n{}\n",
        render::table(
            &[
                "collective",
                "ranks",
                "span",
                "points",
                "sizes",
                "segments",
                "max resid",
                "max ≥1MiB",
                "rms",
                "busbw at max GB/s"
            ],
            rows,
        )
    );
    for f in &p.collectives {
        s += &fit_detail(f, all_points || f.points.len() <= 40);
    }
    s
}

fn fit_detail(f: &CollectiveFit, points: bool) -> String {
    let mut s = format!(
        "\n{} on {} ranks ({}){}\n\n",
        f.coll.name(),
        f.ranks,
        f.span.name(),
        f.source
            .as_ref()
            .map_or(String::new(), |x| format!(", from {x}"))
    );
    let segs = f
        .segments
        .iter()
        .map(|g| {
            vec![
                format!("{} – {}", fmt_bytes(g.lo_bytes), fmt_bytes(g.hi_bytes)),
                g.points.to_string(),
                format!("{:.2}", g.alpha_s * 1e6),
                // A flat segment (every point at one size, or latency-bound) has no slope.
                if g.beta_s_per_byte > 0.0 {
                    format!("{:.1}", 1.0 / g.beta_s_per_byte / GB)
                } else {
                    "-".into()
                },
                format!("{:.1}%", 100.0 * g.max_residual),
            ]
        })
        .collect();
    s += &render::table(
        &["sizes", "points", "alpha_us", "1/beta GB/s", "max resid"],
        segs,
    );
    s.push('\n');
    if points {
        let rows = f
            .points
            .iter()
            .map(|q| {
                vec![
                    fmt_bytes(q.bytes),
                    fmt_secs(q.seconds),
                    fmt_secs(f.predict(q.bytes)),
                    crate::units::signed_pct(q.residual, 1),
                    format!(
                        "{:.1}",
                        calib::bus_factor(f.coll, f.ranks) * q.bytes / q.seconds / GB
                    ),
                    q.busbw_gbytes_s.map_or("-".into(), |b| format!("{b:.1}")),
                ]
            })
            .collect();
        s += "\n";
        s += &render::table(
            &[
                "size",
                "measured",
                "fit",
                "residual",
                "busbw GB/s",
                "busbw reported",
            ],
            rows,
        );
        s.push('\n');
    } else {
        s += &format!("({} points; --points lists them)\n", f.points.len());
    }
    s
}
