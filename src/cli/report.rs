//! `planner report`: arguments, the GPU-count list (`8,16,...,4096`), and the call into
//! `report` that studies, renders and writes reports/NAME/.

use super::CliError;
use super::args::{DtypeArg, Resolved, SearchArgs, Sources, Target};
use crate::report::{self, Claim, Config, Inputs};
use crate::search::MEMORY_HEADROOM;
use crate::spec::Framework;
use clap::Args;
use std::path::PathBuf;

/// Default marginal efficiency that defines the knee: past it, an added GPU delivers less
/// than 80% of its worth (a common capacity-planning cut-off, not a physical constant).
const DEFAULT_KNEE: f64 = 0.8;
/// Default number of plans broken down at the knee.
const DEFAULT_TOP: usize = 5;

/// `planner report` arguments.
#[derive(Args, Clone, Debug)]
pub struct ReportArgs {
    /// Model, cluster, calibration.
    #[command(flatten)]
    pub src: Sources,
    /// GPU counts, comma-separated; `a,b,...,z` continues a doubling (or evenly spaced) run
    /// to z, e.g. `8,16,...,4096` (default: 1, 2, 4, … within a node, then 1, 2, 4, … whole nodes, and the whole cluster).
    #[arg(long, allow_negative_numbers = true)]
    pub gpus: Option<String>,
    /// Training tokens, e.g. 300e9.
    #[arg(long, default_value_t = 300e9, allow_negative_numbers = true)]
    pub tokens: f64,
    /// Price of one GPU-hour in dollars (adds cost to the time-to-train table and chart).
    #[arg(long = "gpu-hour-price", allow_negative_numbers = true)]
    pub gpu_hour_price: Option<f64>,
    /// Batch (the same at every count; default 4 M tokens), sequence length, data type,
    /// memory headroom.
    #[command(flatten)]
    pub search: SearchArgs,
    /// The knee is the largest count up to which every step keeps this marginal efficiency.
    #[arg(long = "knee-efficiency", default_value_t = DEFAULT_KNEE, allow_negative_numbers = true)]
    pub knee_efficiency: f64,
    /// Plans at the knee to break down.
    #[arg(
        long,
        default_value_t = DEFAULT_TOP,
        allow_negative_numbers = true,
        value_parser = super::args::size::<usize>,
    )]
    pub top: usize,
    /// A claimed speedup to check, `GPUS=SPEEDUP` (repeatable), e.g. `--claim 4=3`.
    #[arg(long, value_name = "GPUS=SPEEDUP")]
    pub claim: Vec<String>,
    /// JSON from `planner verify --format json`: adds predicted against measured.
    #[arg(long)]
    pub verify: Option<PathBuf>,
    /// Output folder (default: reports/MODEL-on-CLUSTER).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn bad(msg: String) -> CliError {
    CliError::BadInput(msg)
}

/// Expands `--gpus`: numbers, and `...` continuing the run of the two numbers before it
/// (doubling when the second is a multiple of the first, else evenly spaced) up to the next.
pub fn parse_gpus(s: &str) -> Result<Vec<u64>, CliError> {
    let fix = "write counts like `1,2,4,8` or `8,16,...,4096`";
    let mut out: Vec<u64> = Vec::new();
    let mut pending = false;
    for tok in s.split(',').map(str::trim) {
        if tok == "..." || tok == "…" {
            if out.len() < 2 || pending {
                return Err(bad(format!(
                    "--gpus `{s}`: `...` needs two counts before it to set the step; {fix}"
                )));
            }
            pending = true;
            continue;
        }
        let n: u64 = tok
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| bad(format!("--gpus `{s}`: `{tok}` is not a GPU count; {fix}")))?;
        if pending {
            let (a, b) = (out[out.len() - 2], out[out.len() - 1]);
            let mut x = b;
            while x < n {
                x = if b % a == 0 && b > a {
                    x * (b / a)
                } else {
                    x + b.saturating_sub(a)
                };
                if x <= *out.last().expect("two counts") {
                    break;
                }
                out.push(x);
            }
            if out.last() != Some(&n) {
                let doubling = b % a == 0 && b > a;
                let hint = if doubling && n > b && (n - b) % (b - a) == 0 {
                    // `8,16,...,48` doubles (8, 16, 32, 64); the user meant steps of 8.
                    let c = b + (b - a);
                    if c < n {
                        format!(
                            "`{a},{b},...` doubles; for even steps give a third count: \
                             `{a},{b},{c},...,{n}`"
                        )
                    } else {
                        format!("`{a},{b},...` doubles; for even steps list them: `{a},{b},{c}`")
                    }
                } else {
                    "end it on a count of the run".to_string()
                };
                return Err(bad(format!(
                    "--gpus `{s}`: the run {a}, {b}, … does not reach {n}; {hint}"
                )));
            }
            pending = false;
        } else {
            out.push(n);
        }
    }
    if pending || out.is_empty() {
        return Err(bad(format!("--gpus `{s}`: nothing after `...`; {fix}")));
    }
    if out.windows(2).any(|w| w[1] <= w[0]) {
        return Err(bad(format!("--gpus `{s}`: counts must increase; {fix}")));
    }
    Ok(out)
}

/// The counts a cluster of `total` GPUs in nodes of `per_node` is cut to when --gpus is not
/// given: 1, 2, 4, … within a node, one node, then 2, 4, 8, … whole nodes, and all of it —
/// each a part of one node or whole nodes (`ClusterSpec::with_gpus`): 1, 2, 4, 6, 12, 24 for
/// four nodes of six.
fn default_gpus(total: u64, per_node: u64) -> Vec<u64> {
    let node = per_node.clamp(1, total.max(1));
    let mut v: Vec<u64> = std::iter::successors(Some(1u64), |x| Some(x * 2))
        .take_while(|x| *x < node)
        .collect();
    v.extend(std::iter::successors(Some(node), |x| Some(x * 2)).take_while(|x| *x <= total));
    if v.last() != Some(&total) {
        v.push(total);
    }
    v
}

fn parse_claim(s: &str) -> Result<Claim, CliError> {
    let parsed = s.split_once('=').and_then(|(n, x)| {
        let n: u64 = n.trim().parse().ok()?;
        let x: f64 = x.trim().trim_end_matches(['x', '×']).parse().ok()?;
        // A speedup beyond a million is a typo (1e300 had been charted).
        (n >= 1 && x.is_finite() && x > 0.0 && x <= 1e6).then_some(Claim {
            n_gpus: n,
            speedup: x,
        })
    });
    parsed.ok_or_else(|| {
        bad(format!(
            "--claim `{s}`: write GPUS=SPEEDUP, e.g. `--claim 4=3`"
        ))
    })
}

fn check_numbers(a: &ReportArgs) -> Result<(), CliError> {
    // From a million tokens (a report of one step prints nothing worth reading) to 10^16,
    // a thousand times the largest published training runs (15 T tokens).
    if !(a.tokens.is_finite() && (1e6..=1e16).contains(&a.tokens)) {
        return Err(bad(format!(
            "--tokens {}: give the training tokens, 1e6 to 1e16, e.g. 300e9",
            a.tokens
        )));
    }
    if let Some(p) = a.gpu_hour_price
        && !(p.is_finite() && (0.0..=1e4).contains(&p))
    {
        return Err(bad(format!(
            "--gpu-hour-price {}: give dollars per GPU-hour, 0 to 10000, e.g. 2.5",
            crate::units::fmt_given(p)
        )));
    }
    if !(a.knee_efficiency > 0.0 && a.knee_efficiency <= 1.0) {
        return Err(bad(format!(
            "--knee-efficiency {}: give a fraction in (0, 1], e.g. 0.8",
            a.knee_efficiency
        )));
    }
    if a.top == 0 || a.top > 20 {
        return Err(bad(format!("--top {}: give 1 to 20 plans", a.top)));
    }
    Ok(())
}

/// The command line that regenerates this report, from the resolved values.
fn command(a: &ReportArgs, cfg: &Config, out: &std::path::Path) -> String {
    let list: Vec<String> = cfg.gpus.iter().map(|n| n.to_string()).collect();
    let mut c = format!(
        "planner report --model {} --cluster {} --gpus {} --tokens {:e} --global-batch {} \
         --seq-len {}",
        a.src.model,
        a.src.cluster,
        list.join(","),
        a.tokens,
        cfg.space.global_batch,
        cfg.space.seq_len
    );
    if a.search.dtype != DtypeArg::Bf16 {
        c += &format!(" --dtype {}", cfg.space.dtype);
    }
    if cfg.space.fp8_recipe != crate::spec::Fp8Recipe::Delayed {
        c += &format!(" --fp8-recipe {}", cfg.space.fp8_recipe.name());
    }
    if cfg.space.loss_fusion {
        c += " --cross-entropy-loss-fusion";
    }
    // Every search flag the user gave is written: without --framework the command had
    // regenerated a Megatron report of a torchtitan one (QA: knee 106.5 s against 132.2 s).
    if let Some(f) = a.search.framework {
        c += &format!(" --framework {}", Framework::from(f).name());
    }
    if a.search.memory_headroom != 100.0 * MEMORY_HEADROOM {
        c += &format!(" --memory-headroom {}", a.search.memory_headroom);
    }
    if let Some(p) = &a.src.calibration {
        c += &format!(" --calibration {p}");
    }
    if let Some(p) = a.gpu_hour_price {
        c += &format!(" --gpu-hour-price {p}");
    }
    if a.knee_efficiency != DEFAULT_KNEE {
        c += &format!(" --knee-efficiency {}", a.knee_efficiency);
    }
    if a.top != DEFAULT_TOP {
        c += &format!(" --top {}", a.top);
    }
    for cl in &a.claim {
        c += &format!(" --claim {cl}");
    }
    if let Some(v) = &a.verify {
        c += &format!(" --verify {}", v.display());
    }
    c + &format!(" --out {}", out.display())
}

/// Reads and parses `--verify FILE`.
fn read_verify(path: Option<&PathBuf>) -> Result<Option<report::Verified>, CliError> {
    let Some(p) = path else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(p).map_err(|e| bad(format!("--verify {}: {e}", p.display())))?;
    Ok(Some(report::verify::parse(
        &p.display().to_string(),
        &text,
    )?))
}

/// The study's configuration from the arguments and the resolved model and cluster.
fn config(a: &ReportArgs, r: &Resolved) -> Result<Config, CliError> {
    let gpus = match &a.gpus {
        Some(s) => parse_gpus(s)?,
        None => default_gpus(r.cluster.n_gpus(), r.cluster.gpus_per_node),
    };
    let claims = a
        .claim
        .iter()
        .map(|c| parse_claim(c))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(c) = claims.iter().find(|c| !gpus.contains(&c.n_gpus)) {
        return Err(bad(format!(
            "--claim {}={}: {} GPUs is not among --gpus; add it there",
            c.n_gpus, c.speedup, c.n_gpus
        )));
    }
    // One global batch for every GPU count (a scaling study compares the same work): a
    // multiple of every count, so that data parallelism alone can use all GPUs at each (the
    // default had been a multiple of 1: 512 sequences at 1,024 GPUs, where the report then
    // said DP-only had no plan) — unless that would more than double the ~4 M tokens, when it
    // is a multiple of the largest count.
    let largest = gpus.iter().copied().max().unwrap_or(1);
    let lcm = gpus
        .iter()
        .try_fold(1u64, |l, &n| l.checked_mul(n / crate::units::gcd(l, n)))
        .unwrap_or(u64::MAX);
    let seq = a.search.seq_len.unwrap_or(r.model.seq_len);
    let by_largest = crate::search::default_global_batch(seq, largest);
    let batch_gpus = if crate::search::default_global_batch(seq, lcm) <= 2 * by_largest {
        lcm
    } else {
        largest
    };
    let space = a.search.space(&r.model, &r.cluster.gpu, batch_gpus)?;
    Ok(Config {
        gpus,
        tokens: a.tokens,
        space,
        gpu_hour_price: a.gpu_hour_price,
        knee_efficiency: a.knee_efficiency,
        top: a.top,
        claims,
    })
}

/// Runs `planner report`.
pub fn run(a: &ReportArgs) -> Result<String, CliError> {
    check_numbers(a)?;
    let r = Target {
        src: a.src.clone(),
        gpus: None,
    }
    .resolve()?;
    let cfg = config(a, &r)?;
    let verified = read_verify(a.verify.as_ref())?;
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("reports").join(slug(&format!("{}-on-{}", r.model.name, r.cluster.name)))
    });
    let cmd = command(a, &cfg, &out);
    let inputs = Inputs {
        model: &r.model,
        cluster: &r.cluster,
        profile: r.profile.as_ref(),
        command: &cmd,
    };
    let rep = report::build(&inputs, &cfg, verified.as_ref())?;
    let files = report::write(&rep, &out)?;
    let summary = format!(
        "wrote {} files to {}: report.md, report.html, {} charts (PNG and SVG)\n",
        files.len(),
        out.display(),
        rep.charts.len()
    );
    let Some(k) = rep.study.knee else {
        // Said as the error it is, the report written all the same (it had read "error:
        // wrote 6 files …").
        return Err(CliError::NoFeasiblePlan(format!(
            "no GPU count studied has a plan that fits {} on {}; the report says why: {}",
            r.model.name,
            r.cluster.name,
            summary.trim_end()
        )));
    };
    let p = &rep.study.points[k];
    let e = p.hybrid().expect("the knee has a plan");
    Ok(summary
        + &format!(
            "knee: {} with {} ({:.4} s per step)\n",
            crate::units::fmt_gpus(p.n_gpus()),
            e.plan.short(),
            e.step_time_s
        ))
}

/// A folder name from model and cluster names: letters, digits, `.`, `_` and `-` kept, any
/// other run of characters one `-`, no leading `.` or `-` — so a name such as `../../x`
/// cannot put the default output outside reports/ (QA).
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_start_matches(['.', '-']).trim_end_matches('-');
    if out.is_empty() {
        "report".to_string()
    } else {
        out.replace("..", "-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_lists_expand_runs() {
        assert_eq!(
            parse_gpus("8,16,...,128").unwrap(),
            vec![8, 16, 32, 64, 128]
        );
        assert_eq!(parse_gpus("1, 2, 4").unwrap(), vec![1, 2, 4]);
        assert_eq!(parse_gpus("8,16,…,32,48").unwrap(), vec![8, 16, 32, 48]);
        assert_eq!(parse_gpus("8,20,...,44").unwrap(), vec![8, 20, 32, 44]);
        for bad in [
            "8,...,64",
            "8,16,...,100",
            "4,2",
            "0,1",
            "x",
            "8,16,...",
            "",
        ] {
            let e = parse_gpus(bad).unwrap_err().to_string();
            assert!(e.contains("--gpus"), "{bad}: {e}");
        }
        // A doubling that misses its end says how to write even steps (8, 16, 32, 64 ≠ 48).
        let e = parse_gpus("8,16,...,48").unwrap_err().to_string();
        assert!(e.contains("`8,16,24,...,48`"), "{e}");
        assert_eq!(
            parse_gpus("8,16,24,...,48").unwrap(),
            vec![8, 16, 24, 32, 40, 48]
        );
        let e = parse_gpus("2,4,...,6").unwrap_err().to_string();
        assert!(e.contains("list them: `2,4,6`"), "{e}");
        // An end below the run is refused, not an underflow.
        assert!(parse_gpus("8,16,...,12").is_err());
        assert_eq!(default_gpus(8, 8), vec![1, 2, 4, 8]);
        assert_eq!(default_gpus(12, 4), vec![1, 2, 4, 8, 12]);
        // Nodes of six: every count is a part of one node or whole nodes (8 is neither).
        assert_eq!(default_gpus(24, 6), vec![1, 2, 4, 6, 12, 24]);
        assert_eq!(default_gpus(15, 3), vec![1, 2, 3, 6, 12, 15]);
        assert_eq!(default_gpus(1024, 8).len(), 11);
    }

    #[test]
    fn claims_parse_or_name_the_flag() {
        assert_eq!(
            parse_claim("4=3").unwrap(),
            Claim {
                n_gpus: 4,
                speedup: 3.0
            }
        );
        assert_eq!(parse_claim("8=6x").unwrap().speedup, 6.0);
        assert!(
            parse_claim("4")
                .unwrap_err()
                .to_string()
                .contains("--claim")
        );
    }

    /// The default folder stays under reports/ whatever the model is named.
    #[test]
    fn default_folder_names_stay_inside_reports() {
        assert_eq!(
            slug("gpt3-175b-on-a100-80g-x1024"),
            "gpt3-175b-on-a100-80g-x1024"
        );
        assert_eq!(
            slug("../../escape_test/x-on-h100x8"),
            "escape_test-x-on-h100x8"
        );
        assert_eq!(slug("a\nb\0c"), "a-b-c");
        assert_eq!(slug("..."), "report");
        assert_eq!(slug("48 × h100"), "48-h100");
    }
}
