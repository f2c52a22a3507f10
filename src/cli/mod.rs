//! The command line: parses arguments, resolves specs, calls the library, renders results.
//! Exit codes: 0 ok, 1 no feasible plan, 2 bad input or unavailable backend.

mod args;
mod bench;
mod calibrate;
mod compare;
mod launch;
mod render;
mod report;
mod simulate;
mod suggest;
mod validate;
mod verify;
mod verify_cuda;

pub use args::{Format, PlanArgs, Target};

use crate::calib::CalibError;
use crate::cost::estimate;
use crate::search;
use crate::spec::{self, SpecError, presets};
use crate::units::fmt_count;
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Instant;

/// Errors the command line reports, each with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A model, cluster or device file is wrong.
    #[error("{0}")]
    Spec(#[from] SpecError),
    /// A calibration profile is missing or wrong.
    #[error("{0}")]
    Calib(#[from] CalibError),
    /// Arguments that cannot describe a valid plan.
    #[error("{0}")]
    BadInput(String),
    /// Nothing fits: the search found no feasible plan.
    #[error("{0}")]
    NoFeasiblePlan(String),
    /// Nothing fits, with the document `--format json|csv` prints for it (no plans, the
    /// rejections) so that a script reading stdout gets a document, not nothing.
    #[error("{message}")]
    NoFeasiblePlanWith {
        /// What stderr says.
        message: String,
        /// What stdout gets.
        output: String,
    },
    /// A probe backend is unavailable or failed.
    #[error("{0}")]
    Exec(#[from] crate::exec::ExecError),
    /// Output could not be written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The pipeline simulator cannot run the plan.
    #[error("{0}")]
    Sim(#[from] crate::sim::SimError),
    /// A report could not be made or written.
    #[error("{0}")]
    Report(#[from] crate::report::ReportError),
}

impl CliError {
    /// The process exit code (DESIGN.md §9).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NoFeasiblePlan(_) | CliError::NoFeasiblePlanWith { .. } => 1,
            _ => 2,
        }
    }
}

/// planner: lays a large language model out on a GPU cluster before you book it.
#[derive(Parser, Debug)]
#[command(name = "planner", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Search all plans and print the fastest that fit.
    Suggest {
        /// Model and cluster.
        #[command(flatten)]
        target: Target,
        /// Batch, sequence length, data type, memory headroom.
        #[command(flatten)]
        search: args::SearchArgs,
        /// How many plans to print.
        #[arg(
            long,
            default_value_t = 10,
            allow_negative_numbers = true,
            value_parser = args::size::<usize>,
        )]
        top: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Print the best of the top plans this format can express, as a launch configuration.
        /// (Not with --verify, which re-ranks by measured time: export the verified plan with
        /// `planner export --plan`.)
        #[arg(long, value_enum, conflicts_with = "verify")]
        export: Option<launch::LaunchFormatArg>,
        /// Megatron-LM argument spellings for `--export megatron`.
        #[arg(long = "megatron-version", value_enum, default_value = "core")]
        megatron_version: launch::MegatronVersionArg,
        /// Also print each best plan's per-operator sharding chosen by ILP 1.
        #[arg(long)]
        explain: bool,
        /// Run the top K plans on --backend and re-rank them by measured step time.
        #[arg(
            long,
            value_name = "K",
            allow_negative_numbers = true,
            value_parser = args::size::<usize>,
        )]
        verify: Option<usize>,
        /// How to run them (with --verify).
        #[command(flatten)]
        run: verify::RunArgs,
    },
    /// Run a plan on the GPUs (cuda) or on threads standing for devices (cpu) and compare
    /// predicted with measured step time, per class and peak memory.
    Verify(verify::VerifyArgs),
    /// One spawned rank of `verify --backend cuda` (started by `verify` itself).
    #[command(hide = true)]
    VerifyRank {
        /// The job `verify` wrote.
        #[arg(long)]
        job: std::path::PathBuf,
    },
    /// Price one plan.
    Estimate {
        /// Model and cluster.
        #[command(flatten)]
        target: Target,
        /// The plan.
        #[command(flatten)]
        plan: PlanArgs,
        /// Also list every operator's forward and backward time for one micro-batch.
        #[arg(long)]
        ops: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Also simulate the schedule (JSON: under `sim`).
        #[arg(long)]
        simulate: bool,
        /// Also write the plan as JSON (read back with `--plan`).
        #[arg(long = "save-plan", value_name = "FILE")]
        save_plan: Option<String>,
    },
    /// Simulate one plan's pipeline schedule step by step (events, not closed forms).
    Simulate {
        /// Model and cluster.
        #[command(flatten)]
        target: Target,
        /// The plan (`--schedule gpipe|1f1b|interleaved` picks the schedule).
        #[command(flatten)]
        plan: PlanArgs,
        /// Write the timeline as a Chrome trace JSON (opens in https://ui.perfetto.dev).
        #[arg(long)]
        trace: Option<std::path::PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Time the library's named benchmarks (build with --release).
    Bench {
        /// Benchmark to run (default: all).
        name: Option<String>,
        /// Timed runs per benchmark.
        #[arg(
            long,
            default_value_t = 20,
            allow_negative_numbers = true,
            value_parser = args::size::<u32>,
        )]
        iters: u32,
    },
    /// Write a plan as a Megatron-LM, torchtitan or DeepSpeed launch configuration.
    Export {
        /// Model and cluster.
        #[command(flatten)]
        target: Target,
        /// The plan.
        #[command(flatten)]
        plan: PlanArgs,
        /// Launch-configuration format.
        #[arg(long, value_enum)]
        format: launch::LaunchFormatArg,
        /// Megatron-LM argument spellings.
        #[arg(long = "megatron-version", value_enum, default_value = "core")]
        megatron_version: launch::MegatronVersionArg,
    },
    /// Write the model YAML of a Hugging Face config.json.
    ImportHf {
        /// The config.json.
        config: String,
        /// Model name (default: from the config or its directory).
        #[arg(long)]
        name: Option<String>,
        /// Training sequence length of a rotary model (default: max_position_embeddings).
        #[arg(long = "seq-len", allow_negative_numbers = true, value_parser = args::size::<u64>)]
        seq_len: Option<u64>,
        /// Write the YAML here instead of stdout.
        #[arg(long)]
        out: Option<String>,
    },
    /// Compare DP-only, TP-only, PP-only and the best hybrid on the same GPUs.
    Compare {
        /// Model and cluster.
        #[command(flatten)]
        target: Target,
        /// Batch, sequence length, data type, memory headroom.
        #[command(flatten)]
        search: args::SearchArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Predict published measured runs and report the error per run and per group.
    Validate {
        /// Runs file (schema of validation/published-runs.yaml; default: the built-in set).
        #[arg(long)]
        runs: Option<String>,
        /// Only this group.
        #[arg(long)]
        group: Option<String>,
        /// Explain one run (by its `id`): the model, cluster and plan it was priced as, the
        /// estimate's time and memory, per stage and per operator.
        #[arg(long, value_name = "ID", conflicts_with = "group")]
        explain: Option<String>,
        /// With --explain: write the run's model.yaml, cluster.yaml and plan.json into DIR, for
        /// `planner estimate` (and any other command) to reproduce and vary the prediction.
        #[arg(long, value_name = "DIR", requires = "explain")]
        save_case: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Measure GEMMs, HBM and collectives on a backend (or import nccl-tests output, or show
    /// a profile) into calibrate/NAME/profile.json.
    Calibrate(calibrate::CalibrateArgs),
    /// Write a capacity-planning report (Markdown, HTML, PNG and SVG charts) for GPU counts.
    Report(report::ReportArgs),
    /// List the preset models.
    Models,
    /// List the preset clusters and devices.
    Clusters,
}

/// The command line with a long option's value that starts with a minus sign but is not a
/// plain number (`--stage-layers -1,2`, `--gpus -8,16`) attached as `--option=value`, so
/// that the option's own parser names what is wrong with it: clap takes such a token for an
/// unknown short flag (`allow_negative_numbers` admits single numbers only, and
/// `allow_hyphen_values` would swallow a following `--tp` as the value).
fn attach_hyphen_values(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    for arg in args {
        let text = arg.to_string_lossy();
        let negative_list = text.starts_with('-')
            && text[1..].starts_with(|c: char| c.is_ascii_digit())
            && text.parse::<f64>().is_err();
        if let Some(prev) = out.last_mut() {
            let p = prev.to_string_lossy();
            if negative_list && p.starts_with("--") && p.len() > 2 && !p.contains('=') {
                prev.push("=");
                prev.push(&arg);
                continue;
            }
        }
        out.push(arg);
    }
    out
}

/// Runs the binary: parse, dispatch, print errors, exit with the right code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(attach_hyphen_values(std::env::args_os())) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli.command) {
        Ok(out) => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(out.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                // A reader that stopped early (`| head`) wanted no more.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write the output ({e}); check where stdout goes");
                    ExitCode::from(2)
                }
            }
        }
        Err(e) => {
            if let CliError::NoFeasiblePlanWith { output, .. } = &e {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                // A reader that stopped early, or a stdout that cannot be written, leaves the
                // message on stderr and the exit code as they are.
                let _ = stdout
                    .write_all(output.as_bytes())
                    .and_then(|()| stdout.flush());
            }
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Writes an output file the user named with `flag` (atomically); the error names both.
pub(crate) fn write_output(
    flag: &str,
    path: &std::path::Path,
    bytes: &[u8],
) -> Result<(), CliError> {
    crate::units::write_atomic(path, bytes).map_err(|e| {
        CliError::BadInput(format!(
            "{flag} {}: cannot write it ({e}); give a writable file path",
            path.display()
        ))
    })
}

/// Pretty JSON with a final newline, as every `--format json` prints.
pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("results serialise") + "\n"
}

/// Runs one command and returns what it prints.
pub fn run(cmd: Command) -> Result<String, CliError> {
    match cmd {
        Command::Suggest {
            target,
            search,
            top,
            format,
            export,
            megatron_version,
            explain,
            verify: verify_k,
            run: run_args,
        } => {
            if top == 0 {
                return Err(CliError::BadInput(
                    "--top 0: give at least 1 (how many plans to print)".into(),
                ));
            }
            if explain && format == Format::Csv {
                return Err(CliError::BadInput(
                    "--explain with --format csv: the per-operator sharding has no CSV form; \
                     give --format table or json with --explain"
                        .into(),
                ));
            }
            if let (Some(e), Format::Json | Format::Csv) = (export, format) {
                let f = if format == Format::Json {
                    "json"
                } else {
                    "csv"
                };
                return Err(CliError::BadInput(format!(
                    "--format {f} with --export {}: the export prints the launch configuration in \
                     that framework's own format; drop --format, or drop --export for the ranked \
                     plans as {f}",
                    e.name()
                )));
            }
            let r = target.resolve_for(
                verify_k.is_some() && run_args.backend == Some(calibrate::BackendArg::Cpu),
            )?;
            let r = match verify_k {
                Some(k) => {
                    verify::check_suggest(k, &run_args)?;
                    verify::cpu_target(r, &run_args)?
                }
                None => {
                    let given = run_args.given();
                    if !given.is_empty() {
                        return Err(CliError::BadInput(format!(
                            "{}: these run the top plans, so give --verify K with them (or \
                             drop them)",
                            given.join(", ")
                        )));
                    }
                    r
                }
            };
            let mut space = search.space(&r.model, &r.cluster.gpu, r.cluster.n_gpus())?;
            let (gb, seq) = (space.global_batch, space.seq_len);
            if verify_k.is_some() {
                // Verify runs communication exposed: rank the plans as they will run.
                space.overlap_grad_reduce = false;
                space.tp_overlap = crate::spec::TpOverlap::None;
            }
            let launch_format = export.map(|f| f.with(megatron_version));
            if let Some(f) = export {
                space = launch::space_for_export(space, f, megatron_version, search.framework)?;
            }
            let expressible = |p: &crate::spec::Plan| {
                launch_format.is_none_or(|f| crate::spec::launch::export(&r.model, p, f).is_ok())
            };
            let t0 = Instant::now();
            let res = search::search_where(
                &r.model,
                &r.cluster,
                r.profile.as_ref(),
                &space,
                top,
                &expressible,
            );
            let elapsed = t0.elapsed().as_secs_f64();
            if res.top.is_empty() {
                let unwritable = launch_format.filter(|_| res.enumerated == 0);
                if let Some(why) = suggest::input_refusal(&r, &space, unwritable) {
                    return Err(CliError::BadInput(why));
                }
                let among = export.map_or(String::new(), |f| {
                    format!(" among the plans --export {} can write", f.name())
                });
                let message = format!(
                    "no plan fits {} on {} ({}, global batch {gb}, seq {seq}){among}.\n{}",
                    r.model.name,
                    r.cluster.name,
                    crate::units::fmt_gpus(r.cluster.n_gpus()),
                    render::search_footer(&res, elapsed)
                );
                // JSON and CSV readers get the document with no plans (JSON: the rejections).
                return Err(match format {
                    Format::Json | Format::Csv if export.is_none() && verify_k.is_none() => {
                        // The same keys as a document with plans (QA): nothing simulated.
                        let output = suggest::render(
                            &r,
                            &res,
                            (gb, seq),
                            elapsed,
                            format,
                            None,
                            (
                                serde_json::json!({"simulated": [], "sim_order_changed": false}),
                                String::new(),
                            ),
                        );
                        CliError::NoFeasiblePlanWith { message, output }
                    }
                    _ => CliError::NoFeasiblePlan(message),
                });
            }
            if let Some(f) = export {
                return launch::export_best(&r.model, &res.top, f, megatron_version);
            }
            if let Some(k) = verify_k {
                return verify::suggest(&target, &r, &res.top, k, &run_args, format);
            }
            let explain = explain.then_some(&space);
            // The simulated order shows in the table and the JSON, not in the CSV.
            let sim = if format == Format::Csv {
                (serde_json::json!({}), String::new())
            } else {
                let rr = simulate::rerank(&r, &res)?;
                (
                    serde_json::json!({"simulated": simulate::rerank_json(&rr), "sim_order_changed": rr.order_changed()}),
                    simulate::rerank_table(&rr),
                )
            };
            Ok(suggest::render(
                &r,
                &res,
                (gb, seq),
                elapsed,
                format,
                explain,
                sim,
            ))
        }
        Command::Estimate {
            target,
            plan,
            ops,
            format,
            simulate,
            save_plan,
        } => {
            if ops && format == Format::Csv {
                return Err(CliError::BadInput(
                    "--ops with --format csv: the operator list has no CSV form; give --format \
                     json or table with --ops"
                        .into(),
                ));
            }
            let r = target.resolve()?;
            let plan = plan.resolve(&r.model, &r.cluster)?;
            if let Some(path) = &save_plan {
                launch::save_plan(path, &plan)?;
            }
            let sim = simulate
                .then(|| simulate::simulate(&r, &plan, false))
                .transpose()?;
            let e = match &sim {
                Some(ps) => ps.estimate.clone(),
                None => estimate(&r.model, &r.cluster, &plan, r.profile.as_ref()),
            };
            let machine = crate::cost::Machine {
                cluster: &r.cluster,
                profile: r.profile.as_ref(),
            };
            let op_rows = || crate::cost::op_times(&r.model, &plan, &machine);
            Ok(match format {
                Format::Json => {
                    let mut v = render::estimate_json(&e);
                    if ops {
                        v["ops"] = op_rows()
                            .iter()
                            .map(|(g, o, f, b)| serde_json::json!({"graph": g, "op": o, "fwd_s": f, "bwd_s": b}))
                            .collect();
                    }
                    if let Some(ps) = &sim {
                        v["sim"] = simulate::sim_json(&ps.sim, &e);
                    }
                    json(&v)
                }
                Format::Csv => match &sim {
                    Some(ps) => simulate::estimate_csv(&ps.sim, &e, r.profile.as_ref()),
                    None => render::plan_csv(std::iter::once(&e), r.profile.as_ref()),
                },
                Format::Table => {
                    let mut s = render::estimate_report(&e, &r.model, &r.cluster);
                    if ops {
                        let instances =
                            |g: &str| crate::cost::graph_instances(&r.model, e.plan.seq_len, g);
                        s = s + "\n" + &render::ops_table(&op_rows(), instances);
                    }
                    if let Some(ps) = &sim {
                        s += &simulate::sim_line(&ps.sim, &e);
                    }
                    s
                }
            })
        }
        Command::Simulate {
            target,
            plan,
            trace,
            format,
        } => simulate::run(&target, &plan, trace.as_deref(), format),
        Command::Bench { name, iters } => bench::run(name.as_deref(), iters),
        Command::Compare {
            target,
            search,
            format,
        } => compare::run(&target, &search, format),
        Command::Validate {
            runs,
            group,
            explain,
            save_case,
            format,
        } => match (explain, save_case) {
            (Some(id), save_case) => {
                validate::explain(runs.as_deref(), &id, save_case.as_deref(), format)
            }
            // clap skips `requires` beside --group (which conflicts with --explain): the
            // directory had been ignored silently (QA).
            (None, Some(dir)) => Err(CliError::BadInput(format!(
                "--save-case {dir}: it saves one run's case; give --explain ID (without --group)"
            ))),
            (None, None) => validate::run(runs.as_deref(), group.as_deref(), format),
        },
        Command::Calibrate(a) => calibrate::run(a),
        Command::Report(a) => report::run(&a),
        Command::Verify(a) => verify::run(a),
        Command::VerifyRank { job } => verify_cuda::run_rank(&job),
        Command::Export {
            target,
            plan,
            format,
            megatron_version,
        } => launch::export(&target, &plan, format, megatron_version),
        Command::ImportHf {
            config,
            name,
            seq_len,
            out,
        } => launch::import_hf(&config, name, seq_len, out.as_deref()),
        Command::Models => {
            let rows = presets::MODELS
                .iter()
                .map(|(name, _)| {
                    let m = spec::load_model(name).expect("presets are valid");
                    vec![
                        name.to_string(),
                        m.arch.name().to_string(),
                        fmt_count(m.params()),
                        m.layers.to_string(),
                        m.hidden.to_string(),
                        format!("{}/{}", m.heads, m.kv_heads),
                        m.ffn_hidden.to_string(),
                        m.vocab.to_string(),
                        m.seq_len.to_string(),
                        m.moe
                            .as_ref()
                            .map_or("-".into(), |x| format!("{}×top{}", x.experts, x.top_k)),
                    ]
                })
                .collect();
            Ok(render::table(
                &[
                    "model", "arch", "params", "layers", "hidden", "heads/kv", "ffn", "vocab",
                    "seq_len", "moe",
                ],
                rows,
            ) + "\n")
        }
        Command::Clusters => {
            let rows = presets::CLUSTERS
                .iter()
                .map(|(name, _)| {
                    let c = spec::load_cluster(name).expect("presets are valid");
                    vec![
                        name.to_string(),
                        c.gpu.name.clone(),
                        c.n_gpus().to_string(),
                        format!("{}×{}", c.nodes, c.gpus_per_node),
                        format!("{:.0} GB/s", c.intra_node.bw_gbytes_s),
                        c.inter_node.as_ref().map_or("-".into(), |n| {
                            format!("{}×{:.0} Gb/s", n.nics_per_node, n.nic_gbits_s)
                        }),
                    ]
                })
                .collect();
            let devices = presets::DEVICES
                .iter()
                .map(|(name, _)| {
                    let d = spec::load_device(name).expect("presets are valid");
                    vec![
                        name.to_string(),
                        format!("{:.0}", d.memory_gib),
                        format!("{:.0}", d.hbm_gbytes_s),
                        format!("{:.0}", d.peak_tflops.bf16),
                        d.peak_tflops.fp8.map_or("-".into(), |x| format!("{x:.0}")),
                        d.sms.to_string(),
                    ]
                })
                .collect();
            Ok(render::table(
                &[
                    "cluster",
                    "gpu",
                    "gpus",
                    "nodes×gpus",
                    "nvlink/gpu",
                    "network/node",
                ],
                rows,
            ) + "\n\n"
                + &render::table(
                    &[
                        "device",
                        "memory_gib",
                        "hbm_gbytes_s",
                        "bf16_tflops",
                        "fp8_tflops",
                        "sms",
                    ],
                    devices,
                )
                + "\n")
        }
    }
}
