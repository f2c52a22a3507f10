//! The opening of a report: the inputs it rests on, the summary (recommendation, knee, what
//! limits scaling) and the claimed speedups checked against the prediction.

use super::Inputs;
use super::doc::{Block, Table, amount, count, pct, sig, thousands};
use super::sections::{METHODS, NEAR_LINEAR, no_plan_at, plan_cell};
use super::study::{Claim, Config, Point, Study, limiting, term_meaning, training};
use crate::cost::Estimate;
use crate::search::Space;
use crate::spec::{ClusterSpec, ModelSpec, Plan};
use crate::units::fmt_count;

fn model_desc(m: &ModelSpec) -> String {
    let window = m.attention_window.map_or(String::new(), |w| {
        format!(", sliding attention window of {}", w.describe())
    });
    format!(
        "`{}`: {} parameters, {} layers, hidden {}, {} heads, {} architecture{window}",
        m.name,
        fmt_count(m.params()),
        m.layers,
        m.hidden,
        m.heads,
        m.arch.name()
    )
}

fn cluster_desc(c: &ClusterSpec) -> String {
    let net = c.inter_node.as_ref().map_or("none (one node)".into(), |n| {
        format!(
            "{} × {:.0} Gb/s {} per node",
            n.nics_per_node, n.nic_gbits_s, n.fabric
        )
    });
    format!(
        "`{}`: {} node(s) × {} {} ({} GiB, {:.0} dense bf16 TFLOP/s); {} {:.0} GB/s per GPU \
         inside a node; network {net}",
        c.name,
        c.nodes,
        c.gpus_per_node,
        c.gpu.name,
        crate::units::fmt_tenths(c.gpu.memory_gib),
        c.gpu.peak_tflops.bf16,
        c.intra_node.fabric,
        c.intra_node.bw_gbytes_s
    )
}

fn training_desc(cfg: &Config) -> String {
    let tokens_per_step = (cfg.space.global_batch * cfg.space.seq_len) as f64;
    format!(
        "{} tokens; global batch {} sequences × {} tokens = {} tokens per step (the same at \
         every GPU count); {} steps",
        count(cfg.tokens),
        cfg.space.global_batch,
        cfg.space.seq_len,
        thousands(tokens_per_step),
        thousands((cfg.tokens / tokens_per_step).ceil())
    )
}

/// The plan space in words, with the settings every plan shares that its label leaves out
/// (`Plan::short`): re-pricing a label with `estimate` needs them as flags.
fn space_desc(space: &Space) -> String {
    let names = |v: Vec<String>| v.join("/");
    // Every plan of the space shares these.
    let flags = Plan {
        framework: space.framework,
        dtype: space.dtype,
        fp8_recipe: space.fp8_recipe,
        loss_fusion: space.loss_fusion && space.framework == crate::spec::Framework::Megatron,
        attention: space.attention,
        tp_overlap: space.tp_overlap,
        overlap_grad_reduce: space.overlap_grad_reduce,
        grad_accumulation_fusion: space.grad_accumulation_fusion,
        global_batch: space.global_batch,
        seq_len: space.seq_len,
        ..Plan::new(1, 1, 1, 1, 1, 1)
    }
    .label_flags();
    // Selective recomputation once per module set the search tries, as labels print it.
    let rcs: Vec<String> = space
        .recompute_choices()
        .into_iter()
        .map(|(recompute, recompute_modules)| {
            let p = Plan {
                recompute,
                recompute_modules,
                ..Plan::new(1, 1, 1, 1, 1, 1)
            };
            format!("{}{}", recompute.name(), p.modules_suffix())
        })
        .collect();
    let mut hints = Vec::new();
    if rcs.iter().any(|r| r.contains('(')) {
        hints.push("rc=selective(M) is --recompute selective --recompute-modules M");
    }
    if space.fp8_param_gather
        && space.dtype == crate::units::Dtype::Fp8
        && space.framework == crate::spec::Framework::Megatron
    {
        hints.push("zero1 fp8-params is --zero 1 --fp8-param-gather");
    }
    let hint = if hints.is_empty() {
        String::new()
    } else {
        format!(" ({})", hints.join("; "))
    };
    format!(
        "priced with `{flags}` (give `estimate` these to re-price a plan's label{hint}); \
         recompute {}, ZeRO {}, sequence parallelism, micro-batch ≤ {}, virtual stages ≤ {}, \
         context parallelism ≤ {}; plans leave {:.0}% of device memory free",
        names(rcs),
        names(space.zero.iter().map(u8::to_string).collect()),
        space.max_mbs,
        space.max_vpp,
        space.max_cp,
        100.0 * space.memory_headroom
    )
}

/// The inputs table at the top of the report.
pub fn inputs(inputs: &Inputs, cfg: &Config, study: &Study) -> Vec<Block> {
    let gpus: Vec<String> = cfg.gpus.iter().map(|n| n.to_string()).collect();
    let chosen = study.top.first().map(|l| &l.estimate);
    let rows = [
        ("model", model_desc(inputs.model)),
        ("cluster", cluster_desc(inputs.cluster)),
        ("GPU counts", gpus.join(", ")),
        ("calibration", calibration(inputs)),
        (
            "numbers from (chosen plan)",
            chosen.map_or("-".into(), |e| e.provenance.summary().join("; ")),
        ),
        ("training", training_desc(cfg)),
        ("plan space", space_desc(&cfg.space)),
        (
            "GPU-hour price",
            cfg.gpu_hour_price
                .map_or("not given (no cost figures)".into(), |p| format!("${p}")),
        ),
        (
            "knee",
            format!(
                "largest GPU count reached while every step up keeps a marginal scaling \
                 efficiency ≥ {}",
                pct(cfg.knee_efficiency)
            ),
        ),
        ("tool", format!("planner {}", env!("CARGO_PKG_VERSION"))),
        ("regenerate", format!("`{}`", inputs.command)),
    ];
    let mut t = Table::new(&["input", "value"]);
    for (k, v) in rows {
        t.row(vec![k.to_string(), v]);
    }
    vec![Block::Heading(2, "Inputs".into()), Block::Table(t)]
}

fn calibration(inputs: &Inputs) -> String {
    match inputs.profile {
        None => "none: every number comes from the hardware preset's efficiency curves \
                 (no measurement)"
            .into(),
        Some(p) => {
            let m = &p.meta;
            let mut parts = vec![
                format!("backend {}", m.backend),
                format!("device {}", m.device),
            ];
            if let Some(d) = &m.date {
                parts.push(format!("measured {d}"));
            }
            if let Some(v) = &m.tool_version {
                parts.push(format!("by planner {v}"));
            }
            if m.truncated {
                parts.push("probe budget ran out (truncated)".into());
            }
            format!("`{}` ({})", p.name, parts.join(", "))
        }
    }
}

/// One sentence on why scaling from one GPU to `e`'s count falls short of linear.
pub fn why_sentence(single: &Estimate, e: &Estimate, gpus_per_node: u64) -> String {
    let (term, excess, gap) = limiting(single, e);
    if gap < -NEAR_LINEAR * e.step_time_s {
        // More GPUs can run a faster plan than one GPU's memory allows (less recomputation,
        // larger micro-batches): the speedup exceeds the GPU count.
        return "it scales better than linear (more GPUs hold less state each and run a faster plan than one GPU fits)".into();
    }
    if gap <= NEAR_LINEAR * e.step_time_s {
        return "it scales within 1% of linear".into();
    }
    format!(
        "it loses {} s per step against linear scaling, {} s of it to {term}: {}{}",
        sig(gap, 3),
        sig(excess.max(0.0), 3),
        term_meaning(term),
        detail(term, single, e, gpus_per_node)
    )
}

/// The plan's numbers behind a limiting term.
fn detail(term: &str, single: &Estimate, e: &Estimate, gpus_per_node: u64) -> String {
    let p = &e.plan;
    match term {
        "bubble" => format!(
            " — pp = {} stages fill and drain around only {} micro-batches per step (global \
             batch {} / (dp {} × micro-batch {}))",
            p.pp,
            p.n_micro(),
            p.global_batch,
            p.dp,
            p.mbs
        ),
        "DP comm" => format!(
            " — {} data-parallel replicas{}",
            p.dp,
            if e.n_gpus > gpus_per_node {
                " reducing gradients across nodes"
            } else {
                ""
            }
        ),
        "TP comm" => format!(
            " — tp = {}{}",
            p.tp,
            if p.tp > gpus_per_node {
                ", spanning nodes"
            } else {
                ""
            }
        ),
        "PP comm" => format!(" — pp = {}", p.pp),
        "compute" => format!(
            " — MFU {} against {} on one GPU",
            pct(e.mfu),
            pct(single.mfu)
        ),
        "recompute" => format!(
            " — {}{} recomputation",
            p.recompute.name(),
            p.modules_suffix()
        ),
        "optimizer" if p.zero == 0 => {
            format!(" — ZeRO-0: each of {} replicas updates every weight", p.dp)
        }
        _ => String::new(),
    }
}

/// The summary: the recommendation, the knee, what limits scaling, claims.
pub fn summary(inputs: &Inputs, cfg: &Config, study: &Study) -> Vec<Block> {
    let mut items = Vec::new();
    let single = &study.points[0].cmp.single;
    match study.knee {
        None => items.push(format!(
            "**No GPU count studied has a plan that fits** {} on {}.",
            inputs.model.name, inputs.cluster.name
        )),
        Some(k) => {
            let p = &study.points[k];
            let e = p.hybrid().expect("the knee has a plan");
            let t = training(e, cfg.tokens, cfg.gpu_hour_price);
            items.push(format!(
                "**Recommended: {}** (the knee) with `{}`: {} s per step, {} tokens/s, MFU \
                 {}; {} tokens in {} days, {} GPU-hours{}.",
                crate::units::fmt_gpus(p.n_gpus()),
                e.plan.short(),
                sig(e.step_time_s, 4),
                thousands(e.tokens_per_s),
                pct(e.mfu),
                count(cfg.tokens),
                sig(t.days, 3),
                amount(t.gpu_hours),
                t.cost
                    .map_or(String::new(), |c| format!(", ${}", amount(c)))
            ));
        }
    }
    if let Some(last) = study.points.iter().rev().find(|p| p.hybrid().is_some()) {
        let e = last.hybrid().expect("found");
        items.push(format!(
            "At {} the best plan is {}× faster than one GPU ({} efficiency); {}.",
            crate::units::fmt_gpus(last.n_gpus()),
            sig(last.cmp.speedup(e), 3),
            pct(last.cmp.efficiency(e)),
            why_sentence(single, e, inputs.cluster.gpus_per_node)
        ));
    }
    for (m, name) in &METHODS[..3] {
        if let Some(where_) = no_plan_at(study, m) {
            items.push(format!("{name} has no feasible plan {where_}."));
        }
    }
    items.push(baseline_sentence(single));
    let mut out = vec![Block::Heading(2, "Summary".into()), Block::Bullets(items)];
    if !cfg.claims.is_empty() {
        out.extend(claims(&cfg.claims, study, inputs.cluster.gpus_per_node));
    }
    out
}

fn baseline_sentence(single: &Estimate) -> String {
    if single.fits {
        format!(
            "Speedups are against the fastest one-GPU plan, `{}` ({} s per step).",
            single.plan.short(),
            sig(single.step_time_s, 4)
        )
    } else {
        format!(
            "The model does not fit one GPU: speedups are against the fastest one-GPU plan on a \
             hypothetical GPU with unbounded memory, `{}` ({} s per step, {:.0} GiB).",
            single.plan.short(),
            sig(single.step_time_s, 4),
            single.memory_gib_per_gpu
        )
    }
}

/// Within this relative distance a claimed speedup agrees with a predicted one.
const CLAIM_TOLERANCE: f64 = 0.15;

/// Whether a claim agrees with the best plan's predicted speedup, and which method it
/// matches when it does not.
fn verdict(c: &Claim, p: &Point) -> String {
    // A claim above N× on N GPUs says more than linear: possible only where one GPU had to
    // recompute or shrink its micro-batch to fit, so it is said, not refused.
    let superlinear = if c.speedup > c.n_gpus as f64 {
        format!("a superlinear claim (above {}×); ", c.n_gpus)
    } else {
        String::new()
    };
    format!("{superlinear}{}", verdict_of_speedup(c, p))
}

fn verdict_of_speedup(c: &Claim, p: &Point) -> String {
    let close = |x: f64| (x - c.speedup).abs() / c.speedup <= CLAIM_TOLERANCE;
    let Some(best) = p.hybrid().map(|e| p.cmp.speedup(e)) else {
        return "nothing fits: no speedup".into();
    };
    if close(best) {
        return format!("agrees (within {})", pct(CLAIM_TOLERANCE));
    }
    let side = if best > c.speedup { "more" } else { "less" };
    let nearest = METHODS[..3]
        .iter()
        .filter_map(|(m, name)| {
            let e = p.method(m).best.as_ref()?;
            Some((*name, p.cmp.speedup(e)))
        })
        .filter(|(_, x)| close(*x))
        .min_by(|a, b| (a.1 - c.speedup).abs().total_cmp(&(b.1 - c.speedup).abs()));
    match nearest {
        Some((name, x)) => format!(
            "the best plan gives {side}; {name} alone gives {}×, close to the claim",
            sig(x, 3)
        ),
        None => format!("the planner predicts {side} than claimed"),
    }
}

/// Claimed speedups against the prediction.
fn claims(claims: &[Claim], study: &Study, gpus_per_node: u64) -> Vec<Block> {
    let mut t = Table::new(&[
        "GPUs",
        "claimed speedup",
        "predicted (best plan)",
        "best plan",
        "DP-only",
        "TP-only",
        "PP-only",
        "verdict",
        "why not linear",
    ]);
    for c in claims {
        let Some(p) = study.points.iter().find(|p| p.n_gpus() == c.n_gpus) else {
            continue;
        };
        let sp = |m: &str| {
            p.method(m)
                .best
                .as_ref()
                .map_or("none".into(), |e| format!("{}×", sig(p.cmp.speedup(e), 3)))
        };
        let e = p.hybrid();
        t.row(vec![
            c.n_gpus.to_string(),
            format!("{}×", sig(c.speedup, 3)),
            sp("hybrid"),
            plan_cell(e),
            sp("dp-only"),
            sp("tp-only"),
            sp("pp-only"),
            verdict(c, p),
            e.map_or("-".into(), |e| {
                why_sentence(&p.cmp.single, e, gpus_per_node)
            }),
        ]);
    }
    vec![
        Block::Heading(3, "Claims checked".into()),
        Block::Para(
            "Speedups someone expects, against what the planner predicts on this cluster for the \
             same global batch."
                .into(),
        ),
        Block::Table(t),
    ]
}
